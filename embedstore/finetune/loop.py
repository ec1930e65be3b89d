"""The fine-tuning loop: AdamW with warm-up and cosine decay, a lower backbone learning rate,
early stopping on validation accuracy, a checkpoint every epoch (safetensors + JSON) and resume."""

from __future__ import annotations

import json
import math
import numbers
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..errors import FinetuneError
from ..progress import progress_bar


@dataclass
class Recipe:
    unfreeze: int = 2
    epochs: int = 5
    batch_size: int = 32
    lr: float = 1e-3
    backbone_lr_mult: float = 0.1
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    patience: int = 3
    augment: bool = True
    seed: int = 0
    class_weight: str = "none"  # "balanced": cross-entropy weights n / (K x class count), for imbalanced labels

    def to_dict(self) -> dict:
        return asdict(self)

    def check(self) -> "Recipe":
        """Refuse, before anything is loaded or written, a value outside its range, in one line naming
        the option (a negative --lr trained, re-embedded the store and added a vector set). The upper
        bound of unfreeze depends on the encoder: `trainable_names` checks it once the model is known."""
        for name, (lo, hi, lo_open, what) in RECIPE_RANGES.items():
            v = getattr(self, name)
            integer = what == "an integer"
            ok = (isinstance(v, numbers.Integral if integer else numbers.Real) and not isinstance(v, bool) and math.isfinite(v)
                  and (v > lo if lo_open else v >= lo) and (hi is None or v <= hi))
            if not ok:
                flag, below = RECIPE_FLAGS[name], "<" if lo_open else "<="
                shown = f"{lo} {below} {flag} <= {hi}" if hi is not None else f"{flag} {'>' if lo_open else '>='} {lo}"
                raise FinetuneError(f"{flag} must be {what} with {shown}, not {v!r}")
        if self.class_weight not in ("none", "balanced"):
            raise FinetuneError(f"--class-weight must be none or balanced, not {self.class_weight!r}")
        return self


# Recipe field -> the option that sets it (for messages)
RECIPE_FLAGS = {"unfreeze": "--unfreeze", "epochs": "--epochs", "batch_size": "--batch-size", "lr": "--lr",
                "backbone_lr_mult": "--backbone-lr-mult", "weight_decay": "--weight-decay", "patience": "--patience",
                "augment": "--no-augment", "seed": "--seed", "class_weight": "--class-weight", "warmup_epochs": "warmup_epochs"}

# Recipe field -> (lowest, highest or None, lowest excluded, kind). AdamW steps each weight by about
# lr, so a learning rate above 1 only wrecks the pretrained features; weight decay is decoupled
# (each step shrinks weights by lr x decay), so above 1 it could flip their sign. Seeds seed numpy
# and torch generators (seed x 1000 + epoch for the shuffling), which take non-negative 32-bit values.
RECIPE_RANGES = {
    "unfreeze": (0, None, False, "an integer"),
    "epochs": (1, None, False, "an integer"),
    "batch_size": (1, None, False, "an integer"),
    "lr": (0, 1, True, "a number"),
    "backbone_lr_mult": (0, None, True, "a number"),
    "weight_decay": (0, 1, False, "a number"),
    "warmup_epochs": (0, None, False, "a number"),
    "patience": (1, None, False, "an integer"),
    "seed": (0, 2**32 - 1, False, "an integer"),
}


def build_net(encoder, n_classes: int, normalize: bool):
    import torch.nn as nn
    import torch.nn.functional as F

    class FineTuneNet(nn.Module):
        """The encoder's features (L2-normalised like the store's vectors) into a linear classifier."""

        def __init__(self):
            super().__init__()
            self.backbone = encoder.model
            self.fc = nn.Linear(encoder.cfg.dim, n_classes)

        def forward(self, x):
            f = self.backbone(dict(x)) if isinstance(x, dict) else self.backbone(x)
            if isinstance(f, dict):  # a sentence-transformers model: its features dict
                f = f["sentence_embedding"]
            return self.fc(F.normalize(f, dim=1) if normalize else f)

    return FineTuneNet()


def set_trainable(net, backbone_names: set[str]) -> tuple[list, list]:
    """Freeze everything but `backbone_names` and the classifier; returns (backbone params, head params)."""
    bb, head = [], []
    for n, p in net.backbone.named_parameters():
        p.requires_grad_(n in backbone_names)
        if n in backbone_names:
            bb.append(p)
    for p in net.fc.parameters():
        p.requires_grad_(True)
        head.append(p)
    return bb, head


def train_mode(net) -> None:
    """Thawed modules train; frozen ones, and every BatchNorm, stay in eval mode. BatchNorm keeps
    its pretrained statistics (its scale and shift still learn): with small batches, batch
    statistics would shift the features away from the ones the classifier started from."""
    import torch.nn as nn

    net.eval()
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            continue
        if any(p.requires_grad for p in m.parameters(recurse=False)):
            m.train()


def lr_factor(step: int, warmup: int, total: int) -> float:
    if step < warmup:
        return (step + 1) / max(1, warmup)
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def evaluate(net, loader, device, amp_dtype) -> tuple[float, float, np.ndarray, float]:
    """(accuracy, mean cross-entropy, predictions, balanced accuracy) over a loader; balanced
    accuracy is the mean recall over the classes present."""
    import torch
    import torch.nn.functional as F

    net.eval()
    hits = n = 0
    loss = 0.0
    preds, ys = [], []
    with torch.inference_mode():
        for batch in loader:
            if batch is None:
                continue
            x, y = batch[0].to(device), batch[1].to(device)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                logits = net(x).float()
            loss += float(F.cross_entropy(logits, y, reduction="sum"))
            p = logits.argmax(1)
            hits += int((p == y).sum())
            n += len(y)
            preds.append(p.cpu().numpy())
            ys.append(y.cpu().numpy())
    pred = np.concatenate(preds) if preds else np.zeros(0, int)
    bal = 0.0
    if n:
        truth = np.concatenate(ys)
        bal = float(np.mean([(pred[truth == c] == c).mean() for c in np.unique(truth)]))
    return (hits / n if n else 0.0), (loss / n if n else 0.0), pred, bal


def _trainable_state(net) -> dict:
    """Everything training can change: trainable parameters and all buffers (BatchNorm statistics of
    thawed blocks move in train mode; frozen ones do not, so saving them all is exact and simple)."""
    out = {n: p.detach().cpu().contiguous() for n, p in net.named_parameters() if p.requires_grad}
    out.update({f"buffer:{n}": b.detach().cpu().contiguous() for n, b in net.named_buffers()})
    return out


def _restore(net, tensors: dict) -> None:
    import torch

    named = dict(net.named_parameters())
    buffers = dict(net.named_buffers())
    with torch.no_grad():
        for k, v in tensors.items():
            target = buffers[k[len("buffer:"):]] if k.startswith("buffer:") else named[k]
            target.copy_(v.to(target.device))


def save_checkpoint(ckpt: Path, net, opt, meta: dict, best_state: dict | None) -> None:
    """Trainable weights, optimizer moments and loop state, each written atomically; state.json last."""
    from safetensors.torch import save_file

    from ..atomic import atomic_path, write_json_atomic

    ckpt.mkdir(parents=True, exist_ok=True)
    tensors = {f"param.{k}": v for k, v in _trainable_state(net).items()}
    params = [p for g in opt.param_groups for p in g["params"]]
    for i, p in enumerate(params):
        for k, v in opt.state.get(p, {}).items():
            tensors[f"opt.{i}.{k}"] = v.detach().cpu().contiguous().reshape(v.shape)
    if best_state is not None:
        with atomic_path(ckpt / "best.safetensors") as tmp:
            save_file(best_state, str(tmp))
    with atomic_path(ckpt / "state.safetensors") as tmp:
        save_file(tensors, str(tmp))
    write_json_atomic(ckpt / "state.json", meta, indent=1)


def load_checkpoint(ckpt: Path, net, opt) -> dict:
    from safetensors.torch import load_file

    if not (ckpt / "state.json").is_file() or not (ckpt / "state.safetensors").is_file():
        raise FinetuneError(f"--resume: no checkpoint in {ckpt}; start without --resume (with --overwrite to replace the folder)")
    meta = json.loads((ckpt / "state.json").read_text())
    tensors = load_file(str(ckpt / "state.safetensors"))
    _restore(net, {k[len("param."):]: v for k, v in tensors.items() if k.startswith("param.")})
    params = [p for g in opt.param_groups for p in g["params"]]
    for k, v in tensors.items():
        if k.startswith("opt."):
            _, i, name = k.split(".", 2)
            opt.state[params[int(i)]][name] = v.to(params[int(i)].device) if name != "step" else v
    return meta


def fit(net, train_loader_for_epoch, val_loader, recipe: Recipe, device, amp_dtype, ckpt: Path, resume: bool,
        trainable: tuple[list, list], progress: bool = True, on_epoch=None, class_weights=None) -> dict:
    """Train with early stopping; returns the loop state (history, best epoch). The best weights
    are loaded into `net` at the end. `class_weights` (a tensor, one per class) weight the loss."""
    import torch
    import torch.nn.functional as F
    from safetensors.torch import load_file

    bb, head = trainable
    groups = [{"params": head, "lr": recipe.lr, "base_lr": recipe.lr}]
    if bb:
        groups.append({"params": bb, "lr": recipe.lr * recipe.backbone_lr_mult, "base_lr": recipe.lr * recipe.backbone_lr_mult})
    opt = torch.optim.AdamW(groups, weight_decay=recipe.weight_decay)
    steps_per_epoch = max(1, len(train_loader_for_epoch(0)))
    total = steps_per_epoch * recipe.epochs
    warmup = int(round(recipe.warmup_epochs * steps_per_epoch))
    state = {"epoch": 0, "step": 0, "history": [], "best_val": -1.0, "best_epoch": 0, "bad_epochs": 0,
             "recipe": recipe.to_dict(), "stopped": ""}
    best_state = None
    if resume:
        state = load_checkpoint(ckpt, net, opt)
        if state.get("recipe") != recipe.to_dict():
            raise FinetuneError(f"--resume: the checkpoint in {ckpt} was made with another recipe ({state.get('recipe')}); "
                                "resume with the same options, or start over with --overwrite")
    start = state["epoch"]
    for epoch in range(start, recipe.epochs):
        if state["bad_epochs"] >= recipe.patience:
            break
        t0 = time.perf_counter()
        train_mode(net)
        loader = train_loader_for_epoch(epoch)
        bar = progress_bar(len(loader), desc=f"epoch {epoch + 1}/{recipe.epochs}", unit="batch", enabled=progress)
        total_loss = n = 0.0
        for batch in loader:
            if batch is None:
                continue
            for g in opt.param_groups:
                g["lr"] = g["base_lr"] * lr_factor(state["step"], warmup, total)
            x, y = batch[0].to(device, non_blocking=True), batch[1].to(device, non_blocking=True)
            try:
                with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                    loss = F.cross_entropy(net(x).float(), y, weight=class_weights)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            except torch.OutOfMemoryError:
                raise FinetuneError(f"out of {device.type} memory at --batch-size {recipe.batch_size}; "
                                    f"try --batch-size {max(1, recipe.batch_size // 2)} or a smaller --unfreeze") from None
            state["step"] += 1
            total_loss += float(loss.detach()) * len(y)
            n += len(y)
            bar.update(1)
            bar.set_postfix(loss=f"{float(loss.detach()):.3f}", refresh=False)
        bar.close()
        # with class weights the epoch is chosen by validation balanced accuracy, the measure the weights serve
        val_plain, val_loss, _, val_bal = evaluate(net, val_loader, device, amp_dtype)
        val_acc = val_bal if recipe.class_weight == "balanced" else val_plain
        state["history"].append({"epoch": epoch + 1, "train_loss": total_loss / max(n, 1), "val_accuracy": val_plain,
                                 "val_balanced_accuracy": val_bal, "val_loss": val_loss, "lr": opt.param_groups[0]["lr"],
                                 "seconds": time.perf_counter() - t0})
        state["epoch"] = epoch + 1
        if val_acc > state["best_val"]:
            state.update(best_val=val_acc, best_epoch=epoch + 1, bad_epochs=0)
            best_state = {k: v.clone() for k, v in _trainable_state(net).items()}
        else:
            state["bad_epochs"] += 1
        if state["bad_epochs"] >= recipe.patience:
            what = "balanced accuracy" if recipe.class_weight == "balanced" else "accuracy"
            state["stopped"] = f"early stop: no better validation {what} for {recipe.patience} epoch(s)"
        save_checkpoint(ckpt, net, opt, state, best_state)
        if on_epoch:
            on_epoch(state["history"][-1])
    if (ckpt / "best.safetensors").is_file():  # back to the best epoch, BatchNorm statistics included
        _restore(net, load_file(str(ckpt / "best.safetensors")))
    return state
