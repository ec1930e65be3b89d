"""The read stage: DataLoader workers read bytes, hash, decode and preprocess each item."""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass

from ..sources.images import DecodeError, content_hash, read_bytes
from .plan import Task


@dataclass
class Loaded:
    index: int
    sha256: str
    reason: str | None = None  # set when the item is quarantined
    unchanged: bool = False  # same bytes as the vector already stored
    copy_of: str = ""  # the id of a stored item whose file is gone and whose bytes these are: its vector is copied
    notes: tuple = ()  # (kind, detail) pairs the decode gave (sources.images.IMAGE_NOTES): said in the build summary


class ItemDataset:
    """Map-style dataset over build tasks; never raises for a bad file, it reports a reason."""

    def __init__(self, tasks: list[Task], pixels, jpegs_to_device: bool = False, start: int = 0, reuse=None):
        self.tasks = tasks
        self.pixels = pixels  # embedding.pixels.Pixels: bytes -> input tensor
        self.jpegs_to_device = jpegs_to_device
        self.start = start  # the tasks before it are done (a loader reopened with more workers)
        self.reuse = reuse  # plan.Plan.reuse: sha256 -> id of a gone item whose vector a file with those bytes gets

    def __len__(self) -> int:
        return len(self.tasks) - self.start

    def __getitem__(self, i: int):
        i += self.start
        task = self.tasks[i]
        if task.item.problem:  # a bad manifest row: quarantined with its reason, never read
            return Loaded(i, "", task.item.problem), None
        notes: list = []
        sha, reason, unchanged, x = load_image(task.item.uri, task.known_sha, self.pixels, self.jpegs_to_device, self.reuse,
                                               notes)
        if x is None and not reason and not unchanged:  # bytes a gone item had (load_image)
            return Loaded(i, sha, copy_of=self.reuse[sha]), None
        return Loaded(i, sha, reason, unchanged, notes=tuple(notes)), x


def load_image(uri: str, known_sha: str | None, pixels, jpegs_to_device: bool = False, reuse=None,
               notes: list | None = None):
    """(sha256, quarantine reason, unchanged, pixels) for one file; never raises for a bad file.
    `notes` (a list) gets what the decode hides from the encoder (`Pixels.__call__`); a JPEG left
    to the device is not checked for corrupt data (nvJPEG does not say).
    `unchanged` means the bytes hash to `known_sha` (the stored vector's), so nothing is decoded.
    Bytes that `reuse` (sha256 -> id) holds are not decoded either: no reason, not unchanged, no
    pixels (the caller copies that id's vector). With `jpegs_to_device`, a JPEG the encoder's device
    can decode comes back undecoded, as an `embedding.pixels.JpegFile` for `Pixels.batch_on_device`."""
    try:
        data = read_bytes(uri)
    except DecodeError as e:
        return "", str(e), False, None
    sha = content_hash(data)
    if known_sha == sha:
        return sha, None, True, None
    if reuse and sha in reuse:
        return sha, None, False, None
    try:
        left = pixels.for_device(data) if jpegs_to_device else None
        return sha, None, False, left if left is not None else pixels(data, notes)
    except DecodeError as e:
        return sha, str(e), False, None
    except Exception as e:  # noqa: BLE001 - a file that breaks preprocessing is quarantined, not fatal
        return sha, f"preprocessing failed: {type(e).__name__}: {e}"[:300], False, None


@dataclass
class Batch:
    loaded: list[Loaded]
    pixels: object  # tensor (n_ok, 3, H, W); a list when some are JPEG files left to the device (JpegFile)
    ok: list[int]  # positions in `loaded` that have pixels, in pixel order

    def pin_memory(self) -> "Batch":
        """Page-locked pixels, so the copy to the GPU overlaps work (the DataLoader calls this with
        pin_memory=True; without the method it would pass the batch through unpinned). JPEG files
        stay as they are: nvJPEG reads them from host memory."""
        if isinstance(self.pixels, list):
            self.pixels = [x if _is_file(x) else x.pin_memory() for x in self.pixels]
        elif self.pixels is not None:
            self.pixels = self.pixels.pin_memory()
        return self

    def on_device(self, pixels, device) -> tuple[int, int]:
        """Finish the batch on `device` (`Pixels.batch_on_device`): worker pixels are scaled there and
        JPEG files decoded there; a file neither decoder could use becomes quarantined with its
        reason. Returns (JPEG files decoded on the device, files quarantined here)."""
        parts = list(self.pixels) if self.ok else []
        files = sum(1 for x in parts if _is_file(x))
        self.pixels, failed, on_cpu = pixels.batch_on_device(parts, device) if parts else (None, {}, 0)
        for pos, reason in failed.items():
            self.loaded[self.ok[pos]].reason = reason
        self.ok = [k for pos, k in enumerate(self.ok) if pos not in failed]
        return files - on_cpu - len(failed), len(failed)


def _is_file(x) -> bool:
    from ..embedding.pixels import JpegFile

    return isinstance(x, JpegFile)


def collate(samples):
    import torch

    loaded = [s[0] for s in samples]
    ok = [k for k, s in enumerate(samples) if s[1] is not None]
    parts = [samples[k][1] for k in ok]
    if any(_is_file(x) for x in parts):  # JPEG files for the device: stacked once decoded there
        return Batch(loaded, parts, ok)
    return Batch(loaded, torch.stack(parts) if ok else None, ok)


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


# A steady-state window of the loop (batches and seconds after the first batch) before the workers
# may be raised, and the share of it the encoder must have waited on decode (`more_workers`).
ADAPT_BATCHES, ADAPT_SECONDS, WAIT_SHARE_RAISE = 6, 1.0, 0.25


def more_workers(workers: int, cores: int, waited_s: float, loop_s: float, batches: int) -> int | None:
    """How many decode workers a CPU build should run from now on, or None to keep them: when the
    encoder waited on decode for at least a quarter of a steady-state window of the loop (6
    batches and 1 s, after the first batch), enough workers for decoding to keep up, up to one
    per core. Photo-sized JPEGs take 10-20 ms each to decode against 3-5 ms for EfficientNet-Lite0's
    forward: measured on 2 cores, 400 JPEGs of 2048x1536, 1 worker ran the loop at 55 items/s (64%
    of it waiting), 2 workers at 79 (10-13%). Small images keep the measured default split."""
    if workers >= cores or batches < ADAPT_BATCHES or loop_s < ADAPT_SECONDS or waited_s < WAIT_SHARE_RAISE * loop_s:
        return None
    return min(cores, max(workers + 1, math.ceil(workers * loop_s / max(loop_s - waited_s, 1e-9))))


def make_loader(tasks: list[Task], pixels, batch_size: int, workers: int, pin_memory: bool,
                jpegs_to_device: bool = False, start: int = 0, reuse=None):
    """Batches of loaded items in task order from `tasks[start]` on, read by `workers` processes at
    normal priority."""
    from torch.utils.data import DataLoader

    ds = ItemDataset(tasks, pixels, jpegs_to_device, start, reuse)
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


class Feed:
    """The batches of a local image build from its decode workers. On a CPU build whose workers
    were not asked for (`cores` given), it reopens the loader with more workers, at the first
    batch not yet read, when the encoder is seen waiting on them (`more_workers`); the batches the
    old workers had decoded ahead are dropped and read again. `raised` records each change."""

    def __init__(self, tasks: list[Task], pixels, batch_size: int, workers: int, pin_memory: bool = False,
                 jpegs_to_device: bool = False, cores: int | None = None, reuse=None):
        self.tasks, self.pixels, self.batch_size, self.workers = tasks, pixels, batch_size, workers
        self.pin_memory, self.jpegs_to_device, self.cores, self.reuse = pin_memory, jpegs_to_device, cores, reuse
        self.done = 0  # tasks handed out
        self.raised: list[dict] = []  # {"at": tasks done, "from": workers, "to": workers, "waited": share of the window}
        self._open()

    def _open(self) -> None:
        self._it = iter(make_loader(self.tasks, self.pixels, self.batch_size, self.workers, self.pin_memory,
                                    self.jpegs_to_device, start=self.done, reuse=self.reuse))
        self._since, self._waited, self._batches = None, 0.0, 0  # the window opens after the first batch

    def window(self) -> tuple[float, float]:
        """(seconds waited on decode, seconds elapsed) since the window opened: the steady state of
        the current workers."""
        return self._waited, (time.perf_counter() - self._since) if self._since is not None else 0.0

    def __iter__(self):
        return self

    def __next__(self):
        # not worth new workers for the last few batches (nor for none: this call may be the last)
        if self.cores and self._since is not None and len(self.tasks) - self.done > ADAPT_BATCHES * self.batch_size:
            waited, loop = self.window()
            more = more_workers(self.workers, self.cores, waited, loop, self._batches)
            if more:
                self.raised.append({"at": self.done, "from": self.workers, "to": more, "waited": round(waited / loop, 3)})
                self._it = None  # shuts the old workers down
                self.workers = more
                self._open()
        t0 = time.perf_counter()
        batch = next(self._it)
        now = time.perf_counter()
        if self._since is None:
            self._since = now
        else:
            self._waited += now - t0
            self._batches += 1
        self.done += len(batch.loaded)
        return batch
