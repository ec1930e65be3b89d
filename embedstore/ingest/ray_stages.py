"""The Ray build's stages, run on the cluster's workers: decode (CPU tasks), encode (actors),
write (tasks that commit shards). Each takes and returns a Ray Data batch of numpy columns."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

import numpy as np

from ..errors import BuildError
from ..store.schema import STATUS_OK, STATUS_QUARANTINED
from ..store.shards import ItemRows, commit_attrs, write_shard
from .runner import outcome

FAULT_ENV = "EMBEDSTORE_RAY_FAULT"  # "<stage>:<marker file>": SIGKILL one worker once (tests)
PASS_COLUMNS = ("k", "id", "uri", "label", "split", "text", "meta", "size", "mtime_ns", "relabelled", "sha", "reason",
                "unchanged", "notes")

_PIXELS: dict = {}


def decode_batch(batch: dict, preprocess) -> dict:
    """Ray task: read, hash, decode and preprocess (images), or hash (texts); bad items get a reason.
    It runs at normal priority: at idle priority a busy machine starved it (issue 22)."""
    from .loader import load_image
    from .texts import load_text

    t0 = time.perf_counter()
    n = len(batch["k"])
    sha, reason, unchanged, ok = [""] * n, [""] * n, np.zeros(n, bool), np.zeros(n, bool)
    notes = [""] * n  # what the decode found (loader.Loaded.notes), as JSON
    out = {c: batch[c] for c in ("k", "id", "uri", "label", "split", "text", "meta", "size", "mtime_ns", "relabelled")}
    if preprocess is None:
        for i in range(n):
            s, r, u = load_text(batch["text"][i] if batch["has_text"][i] else None, batch["problem"][i] or None,
                                batch["known"][i] or None)
            sha[i], reason[i], unchanged[i], ok[i] = s, r or "", u, r is None and not u
    else:
        from ..embedding.pixels import Pixels

        decode = _PIXELS.get(preprocess) or _PIXELS.setdefault(preprocess, Pixels(preprocess, uint8=True))
        size = preprocess.input_size
        pixels = np.zeros((n, 3, size, size), np.uint8)  # the actor scales and normalises whole batches
        for i in range(n):
            found: list = []
            s, r, u, x = load_image(batch["uri"][i], batch["known"][i] or None, decode, notes=found)
            sha[i], reason[i], unchanged[i], notes[i] = s, r or "", u, json.dumps(found) if found else ""
            if x is not None:
                pixels[i], ok[i] = x.numpy(), True
        out["pixels"] = pixels
    out.update(sha=np.array(sha, dtype=object), reason=np.array(reason, dtype=object), unchanged=unchanged, ok=ok,
               notes=np.array(notes, dtype=object),
               read_s=np.full(n, (time.perf_counter() - t0) / max(1, n)))
    return out


class EmbedActor:
    """Ray actor: the embedding service rebuilt from the set's provenance, loaded once, on its GPU
    or on CPU threads."""

    def __init__(self, provenance: dict, weights: str | None, device: str, precision: str, threads: int, fault: str):
        import torch

        from ..embedding.service import EmbeddingService

        if device == "cpu":
            torch.set_num_threads(threads)
        try:
            self.svc = EmbeddingService.from_provenance(provenance, weights, device, precision, error=BuildError)
        except BuildError as e:
            raise BuildError(f"the encoder on Ray node {socket.gethostname()} differs from the driver's ({e}); install the same "
                             "embedstore, torch and weights on every node") from None
        self.svc.place()
        self.fault, self.calls = fault, 0

    def __call__(self, batch: dict) -> dict:
        t0 = time.perf_counter()
        svc = self.svc
        n, ok = len(batch["k"]), batch["ok"]
        vecs = np.zeros((n, svc.dim), np.float32)
        truncated = 0
        if ok.any():
            if "pixels" in batch:
                x = svc.scale(batch["pixels"][ok])  # on the GPU when there is one
            else:
                x = [str(t) for t in batch["text"][ok]]
                truncated = svc.count_truncated(x)
            vecs[ok] = svc.forward(x)
        self.calls += 1
        _maybe_die(self.fault, "embed", self.calls)
        out = {c: batch[c] for c in PASS_COLUMNS if c in batch}
        out.update(ok=ok, vector=vecs, read_s=batch["read_s"], encode_s=np.full(n, (time.perf_counter() - t0) / n),
                   precision=np.full(n, svc.precision, dtype=object), truncated=np.eye(1, n, dtype=np.int64)[0] * truncated,
                   device=np.full(n, str(svc.device), dtype=object))
        return out


def write_batch(batch: dict, shard_dir: str, set_name: str, set_attrs: dict, dtype: str, stamp: int, fault: str) -> dict:
    """Ray task: commit one shard (temp file, fsync, rename) named by its first plan position."""
    t0 = time.perf_counter()
    order = np.argsort(batch["k"], kind="stable")
    from .notes import add_image_notes

    items, vec_ids, vec_sha, keep, quarantined, found = ItemRows(), [], [], [], [], {}
    encoded = unchanged = relabelled = 0
    for i in order:
        row = {c: batch[c][i] for c in ("id", "uri", "label", "split", "text", "meta", "size", "mtime_ns")}
        what, reason = outcome(batch["reason"][i] or None, bool(batch["unchanged"][i]), batch["vector"][i], dtype)
        items.append(**row, sha256=batch["sha"][i], status=STATUS_QUARANTINED if reason else STATUS_OK, reason=reason or "")
        if what == "quarantined":
            quarantined.append({"id": str(row["id"]), "uri": str(row["uri"]), "reason": reason})
        elif what == "unchanged" and batch["relabelled"][i]:  # same bytes, new label/split/metadata (runner._sort_batch)
            relabelled += 1
        elif what == "unchanged":
            unchanged += 1
        else:
            encoded += 1
            keep.append(i)
            vec_ids.append(str(row["id"]))
            vec_sha.append(str(batch["sha"][i]))
            if "notes" in batch and batch["notes"][i]:
                add_image_notes(found, str(row["id"]), json.loads(batch["notes"][i]))
    vecs = np.asarray(batch["vector"][keep], dtype=dtype).reshape(len(keep), batch["vector"].shape[1])
    n = len(order)
    attrs = commit_attrs(set_name, set_attrs, str(batch["device"][0]), str(batch["precision"][0]), n)
    name = f"{stamp:020d}-ray-{int(batch['k'][order[0]]):012d}.h5"
    write_shard(Path(shard_dir), items, vec_ids, vec_sha, vecs, attrs, name=name)
    _maybe_die(fault, "write", 1)
    return {"shard": [name], "rows": [n], "encoded": [encoded], "unchanged": [unchanged], "metadata_updated": [relabelled],
            "quarantined": [json.dumps(quarantined)], "image_notes": [json.dumps(found)], "truncated": [int(batch["truncated"].sum())],
            "read_s": [float(batch["read_s"].sum())], "encode_s": [float(batch["encode_s"].sum())],
            "write_s": [time.perf_counter() - t0], "precision": [str(batch["precision"][0])]}


def _maybe_die(fault: str, stage: str, calls: int) -> None:
    """Fault injection for tests: with "<stage>:<marker>", the first worker of that stage to get
    here (on its second call for the encoder, mid-stream) creates the marker and is SIGKILLed."""
    if not fault or not fault.startswith(stage + ":") or (stage == "embed" and calls < 2):
        return
    marker = fault.split(":", 1)[1]
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return
    os.close(fd)
    import signal

    os.kill(os.getpid(), signal.SIGKILL)
