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
            sha, reason, unchanged = load_text(it.text, it.problem, tasks[i].known_sha)
            if reason is None and not unchanged:
                ok.append(len(loaded))
                texts.append(it.text)
            loaded.append(Loaded(i, sha, reason, unchanged))
        yield Batch(loaded, texts if texts else None, ok)


def load_text(text: str | None, problem: str | None, known_sha: str | None) -> tuple[str, str | None, bool]:
    """(sha256, quarantine reason, unchanged) for one text item."""
    if problem or text is None:
        return "", problem or "empty text", False
    sha = text_sha256(text)
    return sha, None, known_sha == sha


def text_sha256(text: str) -> str:
    """A text item's content hash: its UTF-8 as the source reader keeps it (stripped of the spaces and
    line ends around it). Every door that asks "was this text seen in training?" hashes it here."""
    return hashlib.sha256(str(text).strip().encode("utf-8")).hexdigest()
