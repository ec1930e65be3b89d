"""The item record every source yields."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Item:
    """One input: a stable id, the file it lives in, and optional label and split."""

    id: str
    uri: str
    label: str | None = None
    split: str | None = None
    text: str | None = None  # text items: the text itself (uri says where it came from)
    problem: str | None = None  # why the item cannot be used (quarantined by the build, with this reason)


@dataclass
class Source:
    """A listed source: its items plus what was left out and why (said in the build summary)."""

    path: str
    kind: str
    items: list[Item]
    skipped: dict[str, list[str]] = field(default_factory=dict)  # reason -> example paths
    has_labels: bool = False
    has_splits: bool = False

    def __len__(self) -> int:
        return len(self.items)
