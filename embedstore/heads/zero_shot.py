"""Zero-shot heads: a CLIP store's classes from text alone, no training items.

Each class name is written into one or more templates ("a photo of a {}."), embedded by the text
tower of the very CLIP model that made the store's image vectors (the vector set's own
EmbeddingService), the template embeddings averaged and re-normalised (CLIP's prompt ensembles).
The head is linear: weights = normalised class embeddings x the model's logit scale, bias 0, so it
is saved, provenance-checked and applied (predict, evaluate, serve) like any other head.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ..errors import HeadError
from .base import Head

DEFAULT_TEMPLATES = ("a photo of a {}.",)


class ZeroShotHead(Head):
    """Scores = X @ coef_.T: cosine similarity to each class's text embedding, times `logit_scale`
    (with L2-normalised image vectors); for two classes one score per row (classes_[1] minus
    classes_[0]), as scikit-learn's binary classifiers give. `fit(X, y=None)` learns nothing from y
    (y is optional and, when given, only validated): it checks the widths and fixes the classes;
    the weights come from `class_embeddings` (K x D, one row per class in `classes`)."""

    kind = "zero-shot"
    _state_arrays = ("coef_", "intercept_")

    def __init__(self, classes=None, class_embeddings=None, logit_scale: float = 100.0):
        self.classes = classes
        self.class_embeddings = class_embeddings
        self.logit_scale = logit_scale

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = False  # zero-shot: the classes come from the prompts, not from y
        return tags

    def fit(self, X, y=None):
        from numbers import Real

        from sklearn.utils.multiclass import check_classification_targets
        from sklearn.utils.validation import validate_data

        from .base import FLOATS

        if y is None:
            X = validate_data(self, X, dtype=FLOATS)
        else:  # accepted for pipelines and checked like any classifier's, then ignored
            X, y = validate_data(self, X, y, dtype=FLOATS)
            check_classification_targets(y)
        if self.classes is None or self.class_embeddings is None:
            raise ValueError("ZeroShotHead needs classes and class_embeddings (one text embedding per class)")
        E = np.array(self.class_embeddings, dtype=np.float64)  # a copy: the parameter is never modified
        if E.ndim != 2 or E.shape[0] != len(self.classes) or len(self.classes) < 2:
            raise ValueError(f"class_embeddings must be (n_classes >= 2, dim); got {E.shape} for {len(self.classes)} classes")
        if E.shape[1] != X.shape[1]:
            raise ValueError(f"X has {X.shape[1]} features, but the class embeddings have {E.shape[1]}")
        if isinstance(self.logit_scale, bool) or not isinstance(self.logit_scale, Real) or not self.logit_scale > 0:
            raise ValueError(f"logit_scale must be a positive number, not {self.logit_scale!r}")
        E /= np.linalg.norm(E, axis=1, keepdims=True).clip(1e-12)
        self.coef_ = (E * float(self.logit_scale)).astype(np.float32)
        self.intercept_ = np.zeros(len(self.classes), dtype=np.float32)
        self.classes_ = np.asarray(self.classes)
        return self

    def _scores(self, X: np.ndarray) -> np.ndarray:
        s = np.asarray(X, dtype=np.float64) @ self.coef_.T.astype(np.float64) + self.intercept_
        return s[:, 1] - s[:, 0] if s.shape[1] == 2 else s

    def state_fields(self) -> dict:
        # the saved JSON's parameters, without the embeddings: a saved head holds them as coef_ in its arrays file
        # (get_params itself keeps them, so that clone and scikit-learn's checks see the real parameters)
        params = {**self.get_params(), "class_embeddings": None}
        return {**super().state_fields(), "params": params}

    @classmethod
    def from_state(cls, doc: dict, arrays: dict[str, np.ndarray]) -> "ZeroShotHead":
        head = super().from_state(doc, arrays)
        if arrays["coef_"].shape[0] != len(head.classes_):
            raise ValueError(f"coef_ has {arrays['coef_'].shape[0]} rows for {len(head.classes_)} classes")
        return head


def parse_classes(text: str) -> list[tuple[str, str]]:
    """"ant,bee" or "n01=ant,n02=honey bee" -> [(label, name in the prompt)]."""
    out, seen = [], set()
    for part in (text or "").split(","):
        part = part.strip()
        if not part:
            continue
        label, _, name = part.partition("=")
        label, name = label.strip(), (name.strip() or label.strip())
        if not label or label in seen:
            raise HeadError(f"--classes '{text}': {'an empty label' if not label else f'label {label!r} twice'}; "
                            "give comma-separated names, e.g. --classes \"ant,bee\" or \"n01=ant,n02=bee\"")
        seen.add(label)
        out.append((label, name))
    return out


def check_templates(templates) -> list[str]:
    templates = list(templates or DEFAULT_TEMPLATES)
    for t in templates:
        if t.count("{}") != 1:
            raise HeadError(f"--template {t!r} must contain '{{}}' exactly once, where the class name goes "
                            "(e.g. \"a photo of a {}.\")")
    return templates


def class_embeddings(service, names: list[str], templates: list[str]) -> np.ndarray:
    """(K, D): each name in every template, embedded by `service.embed_texts`, normalised, averaged, re-normalised."""
    rows = []
    for name in names:
        T = np.asarray(service.embed_texts([t.format(name) for t in templates]), dtype=np.float64)
        T /= np.linalg.norm(T, axis=1, keepdims=True).clip(1e-12)
        m = T.mean(axis=0)
        rows.append(m / max(np.linalg.norm(m), 1e-12))
    return np.stack(rows).astype(np.float32)


def clip_logit_scale(service) -> float:
    """The CLIP model's learned temperature exp(logit_scale) (100 for the released models)."""
    tower = getattr(service.encoder, "text_encoder", None)
    scale = getattr(getattr(tower, "model", None), "logit_scale", None)
    if scale is None:
        return 100.0
    import torch

    with torch.no_grad():
        return float(torch.as_tensor(scale).float().exp().clamp(max=100.0))


def _check_pairs(classes: str) -> list[tuple[str, str]]:
    pairs = parse_classes(classes)
    if len(pairs) < 2:
        raise HeadError(f"--classes '{classes}' names {len(pairs)} class; a classifier needs at least two")
    return pairs


def check_clip_image_set(vs) -> None:
    """One line, with the fix, unless `vs` holds image vectors from a CLIP model's image tower."""
    prov = vs.provenance
    if prov.get("modality") == "text":
        raise HeadError(f"zero-shot heads classify images by text prompts; {vs.name} holds text vectors "
                        f"({prov.get('encoder')}). Build the images with a CLIP encoder, e.g. --encoder open_clip:ViT-B-32/openai")
    if not str(prov.get("encoder", "")).startswith("open_clip:") or prov.get("layer") != "image_embed":
        raise HeadError(f"zero-shot heads need image vectors from a CLIP model's image tower (open_clip:..., layer "
                        f"image_embed); {vs.name} was made with {prov.get('encoder')} (layer {prov.get('layer')}). "
                        "Rebuild with e.g. --encoder open_clip:ViT-B-32/openai, or train a probe: embed fit-head logistic")


def zero_shot_head(vs, rows, classes: str | None = None, templates=None, weights: str | None = None,
                   device: str = "auto") -> tuple[ZeroShotHead, dict]:
    """The fitted zero-shot head for vector set `vs` (its `rows` give the default classes: the
    store's labels), and {"templates", "names" (label -> prompt name), "logit_scale"}; the text
    tower is the one the vector set's provenance names (`weights`: its local file)."""
    from ..embedding import EmbeddingService

    templates = check_templates(templates)
    pairs = _check_pairs(classes) if classes is not None else None
    check_clip_image_set(vs)
    service = EmbeddingService.from_provenance(vs.provenance, weights=weights, device=device, error=HeadError)
    if pairs is None:
        labelled = sorted({str(x) for x in rows.labels if x != ""})
        if len(labelled) < 2:
            raise HeadError(f"{vs.name} has {len(labelled)} labelled class(es); name the classes with --classes \"ant,bee\"")
        pairs = [(c, c.replace("_", " ")) for c in labelled]
    labels, names = [p[0] for p in pairs], [p[1] for p in pairs]
    E = class_embeddings(service, names, templates)
    head = ZeroShotHead(classes=labels, class_embeddings=E, logit_scale=clip_logit_scale(service))
    head.fit(np.zeros((1, E.shape[1]), dtype=np.float32))
    return head, {"templates": templates, "names": dict(zip(labels, names)), "logit_scale": head.logit_scale}


def fit_zero_shot(store: str | Path, classes: str | None = None, templates=None, out: str | Path | None = None,
                  vector_set: str | None = None, weights: str | None = None, val_fraction: float = 0.15,
                  test_fraction: float = 0.15, seed: int = 0, device: str = "auto", force: bool = False, exclude=None):
    """A zero-shot head for a store built with a CLIP image encoder; returns (FitReport, head).

    `classes` defaults to the store's labels. Labelled items are scored on the test split fit-head
    would use with the same fractions and seed (so a probe can be compared on the same items); the
    head saw no item, so nothing is recorded as seen. `exclude` (ids or an Exclusions) leaves items
    out of that test split, as it does for fit_head."""
    from ..evaluation.metrics import classification_metrics
    from ..modelfile import check_model_out, save_head
    from ..store import open_store
    from .data import TEST, SplitData
    from .fit import FitReport, _head_meta, record_exclusions

    t_start = time.perf_counter()
    check_templates(templates)
    if classes is not None:
        _check_pairs(classes)
    check_model_out(out, force, "head", otherwise="choose another --out")
    with open_store(store, mode="r") as st:
        vs = st.select_set(vector_set)
        rows = st.rows(vs.name)
        store_path = str(st.path)
    head, info = zero_shot_head(vs, rows, classes, templates, weights, device)
    labels, names, templates = list(head.classes), [info["names"][c] for c in head.classes], info["templates"]
    labelled = sorted({str(x) for x in rows.labels if x != ""})
    report = FitReport(head="zero-shot", store=store_path, vector_set=vs.name, encoder=vs.encoder,
                       out=str(out) if out else None, classes=labels, counts={"train": 0, "val": 0, "test": 0},
                       split_how="none: no training", in_memory=True, memory_mb=0.0, param=None, chosen=None,
                       selection="none: the weights are the class prompts' text embeddings")
    report.notes.append(f"{len(templates)} template(s) averaged per class: {'; '.join(templates)}; logit scale {head.logit_scale:.4g}")
    unknown = sorted(set(labelled) - set(labels))
    if len(labelled) >= 2 and not unknown:
        data = SplitData(rows, val_fraction, test_fraction, seed, None, 1 << 40, classes=np.asarray(labels), exclude=exclude)
        report.counts, report.split_how = data.counts(), data.split_how + " (only test is scored: nothing is trained)"
        record_exclusions(report, data)
        if report.counts["test"]:
            y, p = data.predict(head, TEST)
            report.test = classification_metrics(y, p, labels, split="test")
            report.test_predictions = dict(zip(map(str, rows.ids[data.mask(TEST)]), map(str, p)))
    elif labelled:
        report.notes.append(f"store labels not among --classes ({', '.join(unknown[:5])}): no metrics; "
                            "score the saved head with `embed evaluate` on a store labelled with these classes")
    if exclude is not None and not report.excluded:
        report.notes.append("the exclusion list was not used: a zero-shot head trains on nothing, and no test split was scored")
    report.seen_items = 0
    if out is not None:
        meta = _head_meta(report, vs, rows)
        meta["seen"] = {"items": 0, "splits": [], "how": "zero-shot: no item was used to fit or select this head"}
        meta["zero_shot"] = {"templates": templates, "names": dict(zip(labels, names)), "logit_scale": head.logit_scale}
        save_head(out, head, meta, overwrite=force, seen_keys=None)
    report.wall_s = time.perf_counter() - t_start
    return report, head
