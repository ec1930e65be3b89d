"""The read stage: DataLoader workers read bytes, hash, decode and preprocess each item."""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..sources.images import DecodeError, content_hash, decode_image, read_bytes
from .plan import Task


@dataclass
class Loaded:
    index: int
    sha256: str
    reason: str | None = None  # set when the item is quarantined
    unchanged: bool = False  # same bytes as the vector already stored


class ItemDataset:
    """Map-style dataset over build tasks; never raises for a bad file, it reports a reason."""

    def __init__(self, tasks: list[Task], transform, exif_transpose: bool = True):
        self.tasks = tasks
        self.transform = transform
        self.exif_transpose = exif_transpose

    def __len__(self) -> int:
        return len(self.tasks)

    def __getitem__(self, i: int):
        task = self.tasks[i]
        if task.item.problem:  # a bad manifest row: quarantined with its reason, never read
            return Loaded(i, "", task.item.problem), None
        sha, reason, unchanged, x = load_image(task.item.uri, task.known_sha, self.transform, self.exif_transpose)
        return Loaded(i, sha, reason, unchanged), x


def load_image(uri: str, known_sha: str | None, transform, exif_transpose: bool = True):
    """(sha256, quarantine reason, unchanged, pixels) for one file; never raises for a bad file.
    `unchanged` means the bytes hash to `known_sha` (the stored vector's), so nothing is decoded."""
    try:
        data = read_bytes(uri)
    except DecodeError as e:
        return "", str(e), False, None
    sha = content_hash(data)
    if known_sha == sha:
        return sha, None, True, None
    try:
        return sha, None, False, transform(decode_image(data, exif_transpose))
    except DecodeError as e:
        return sha, str(e), False, None
    except Exception as e:  # noqa: BLE001 - a file that breaks preprocessing is quarantined, not fatal
        return sha, f"preprocessing failed: {type(e).__name__}: {e}"[:300], False, None


@dataclass
class Batch:
    loaded: list[Loaded]
    pixels: object  # float tensor (n_ok, 3, H, W) or None
    ok: list[int]  # positions in `loaded` that have pixels, in pixel order


def collate(samples):
    import torch

    loaded = [s[0] for s in samples]
    ok = [k for k, s in enumerate(samples) if s[1] is not None]
    pixels = torch.stack([samples[k][1] for k in ok]) if ok else None
    return Batch(loaded, pixels, ok)


# The CPU split between the encoder and decoding, chosen by measurement on 2 shared cores (AMD EPYC,
# native bf16, EfficientNet-Lite0, load average 6-8 from other people's tests; benchmarks/bench_build.py):
# - one torch thread per core left to the encoder, not one per core: on two busy cores, batch 8,
#   EfficientNet-Lite0 ran at 5-33 img/s with two threads against 56-85 with one, ResNet-50 at 3-7
#   against 23-24: a descheduled thread stalls the other at every barrier, where it spins (6-8 img
#   per CPU-second for ResNet-50 against 32-38 with one thread). On an idle machine two threads
#   would be faster for large models; on a shared one they are several times slower.
# - decode workers at the encoder's own priority, not SCHED_IDLE / nice 19: at idle priority a
#   worker gets almost no CPU while anything else runs, and the encoder starves (the issue measured
#   3 img/s). Decoding is 30-100x cheaper than encoding, and a worker blocks once it is
#   `prefetch_factor` batches ahead, so at normal priority it takes only what the encoder consumes.
# - a quarter of the cores decode (at least one): on 2 cores, one worker and one encoder thread.
#   Large photos decode slower; the build summary says so and suggests --workers when it matters.
# Images per forward pass on CPU. Measured there with one encoder thread: batch 4 / 8 / 16 / 32 / 64
# gave 103 / 113 / 82 / 86 / 74 img per CPU-second, with 1,770 / 1,780 / 3,640 / 3,630 / 4,780 minor
# page faults per image: past batch 8 the activations outgrow what the allocator keeps and are mapped
# and unmapped on every pass (the 9.2M faults at batch 64). A GPU keeps 64.
CPU_BATCH_SIZE = 8
GPU_BATCH_SIZE = 64


def cpu_split(cores: int, workers: int | None, accelerated: bool = False) -> tuple[int, int]:
    """(decode workers, encoder threads) for a CPU build on `cores` cores; `workers` when given.

    An accelerated forward (OpenVINO) gets one thread more, sharing a core with the decode workers:
    it is fast enough that they idle most of the time (the encoder waited on decode 3-5% of the loop).
    Measured on 2 cores, 4,000 JPEGs, Lite0: 2 threads 209-215 items/s against 170-174 for 1 on a
    quiet machine, 119 against 123-128 with a second process spinning on one core. Eager torch keeps
    one thread per free core: there a second thread lost 2-10x under load (a descheduled thread
    stalls the other at every barrier)."""
    if workers is None:
        workers = max(1, cores // 4)
    threads = max(1, cores - workers)
    if accelerated and workers > 0:
        threads = min(cores, threads + 1)
    return workers, threads


def decode_worker_init(_worker_id: int = 0) -> None:
    """Run a decode worker at the scheduling class and nice value of the process that started it.

    Undoes an idle or batch class inherited from elsewhere (a worker at SCHED_IDLE starves on a busy
    machine); an unprivileged process can always return to SCHED_OTHER at its own nice value."""
    try:
        if os.sched_getscheduler(0) != os.SCHED_OTHER:
            os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
    except (AttributeError, OSError):  # not Linux, or not allowed: keep what was inherited
        pass


def make_loader(tasks: list[Task], transform, batch_size: int, workers: int, pin_memory: bool,
                exif_transpose: bool = True):
    """Batches of loaded items in task order, read by `workers` processes at normal priority."""
    from torch.utils.data import DataLoader

    ds = ItemDataset(tasks, transform, exif_transpose)
    return DataLoader(
        ds,
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=collate,
        pin_memory=pin_memory,
        prefetch_factor=4 if workers > 0 else None,
        persistent_workers=False,
        worker_init_fn=decode_worker_init if workers > 0 else None,
    )
