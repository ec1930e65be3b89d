"""What decoding found about the images a build embedded and the encoder's input hides
(transparency, a first frame of several, 16-bit values that fill little of their range, corrupt
JPEG data: `sources.images.IMAGE_NOTES`), counted with a few ids, for the build's notes."""

from __future__ import annotations

EXAMPLES = 5  # ids kept (and said) per kind


def add_image_notes(found: dict, item_id: str, notes) -> None:
    """Count one stored item's decode notes ((kind, detail) pairs) into `found`, the report's
    `image_notes`: kind -> {"count", "examples": [{"id", "detail"}, ...]} (the first EXAMPLES)."""
    for kind, detail in dict(notes).items():  # one note of a kind per item
        entry = found.setdefault(kind, {"count": 0, "examples": []})
        entry["count"] += 1
        if len(entry["examples"]) < EXAMPLES:
            entry["examples"].append({"id": str(item_id), "detail": str(detail)})


def merge_image_notes(found: dict, other: dict) -> None:
    """Add another part's counts (a Ray write task's) into `found`."""
    for kind, got in other.items():
        entry = found.setdefault(kind, {"count": 0, "examples": []})
        entry["count"] += int(got["count"])
        entry["examples"] = (entry["examples"] + list(got["examples"]))[:EXAMPLES]


def in_order(found: dict) -> list[str]:
    """The kinds noted, in `IMAGE_NOTES`' order (the summary's and the report's)."""
    from ..sources.images import IMAGE_NOTES

    return sorted(found, key=lambda k: list(IMAGE_NOTES).index(k) if k in IMAGE_NOTES else len(IMAGE_NOTES))


def image_note_lines(found: dict) -> list[str]:
    """One line per kind: how many images, a few ids with what was found in each, and what it means."""
    from ..naming import count
    from ..sources.images import IMAGE_NOTES

    lines = []
    for kind in in_order(found):
        n, ex = found[kind]["count"], found[kind]["examples"]
        ids = ", ".join(f"{e['id']} ({e['detail']})" for e in ex) + (f", ... ({n - len(ex)} more)" if n > len(ex) else "")
        which, meaning = IMAGE_NOTES.get(kind, (kind, ""))
        lines.append(f"{count(n, 'image')} embedded by this build {which}: {ids}" + (f"; {meaning}" if meaning else ""))
    return lines
