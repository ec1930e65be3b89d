"""Building a store: plan -> read (DataLoader workers) -> encode -> write (background shards)."""

from .runner import DEFAULT_ENCODER, BuildReport, build

__all__ = ["build", "BuildReport", "DEFAULT_ENCODER"]
