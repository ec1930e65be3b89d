"""The read stage: DataLoader workers read bytes, hash, decode and preprocess each item."""

from __future__ import annotations

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


def make_loader(tasks: list[Task], transform, batch_size: int, workers: int, pin_memory: bool,
                exif_transpose: bool = True, background: bool = False):
    """Batches of loaded items in task order; `background` runs the workers at idle priority."""
    from torch.utils.data import DataLoader

    from ..embedding.device import lower_priority

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
        worker_init_fn=lower_priority if background and workers > 0 else None,
    )
