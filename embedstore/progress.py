"""The one progress-bar helper: a tqdm bar on stderr, silent when asked or when not useful."""

from __future__ import annotations

import sys
from typing import Any


def progress_bar(total: int | None, desc: str, unit: str = "item", enabled: bool = True) -> Any:
    """A progress bar that shows items/s; a no-op bar when disabled."""
    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        disable=not enabled,
        file=sys.stderr,
        dynamic_ncols=True,
        smoothing=0.1,
        mininterval=0.5,
    )
