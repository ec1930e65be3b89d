"""The read stage for texts: no files to decode, so batches are made in the main process."""

from __future__ import annotations

import hashlib

from .loader import Batch, Loaded
from .plan import Task


def text_fingerprint(text: str | None, problem: str | None) -> tuple[int, int]:
    """(size, mtime_ns) stand-ins for a text item: any change to the text changes them, so the
    planner's unchanged-file test works for texts as it does for files."""
    data = (text or problem or "").encode("utf-8", "surrogatepass")
    return len(data), int(hashlib.sha256(data).hexdigest()[:15], 16)


def text_batches(tasks: list[Task], batch_size: int):
    """Batches of texts in task order; items with a problem are quarantined with it."""
    for s in range(0, len(tasks), batch_size):
        loaded, texts, ok = [], [], []
        for i in range(s, min(len(tasks), s + batch_size)):
            it = tasks[i].item
            if it.problem or it.text is None:
                loaded.append(Loaded(i, "", reason=it.problem or "empty text"))
                continue
            sha = hashlib.sha256(it.text.encode("utf-8")).hexdigest()
            if tasks[i].known_sha == sha:
                loaded.append(Loaded(i, sha, unchanged=True))
                continue
            ok.append(len(loaded))
            loaded.append(Loaded(i, sha))
            texts.append(it.text)
        yield Batch(loaded, texts if texts else None, ok)
