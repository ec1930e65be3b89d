"""Settings read from the environment (EMBEDSTORE_*): tuning knobs for tests, benchmarks and large
stores. A malformed value is one line naming the variable, not a traceback."""

from __future__ import annotations

import os

from .errors import OptionError


def env_number(name: str, default: float, kind=float, minimum: float = 0) -> float:
    """The number in environment variable `name` (`default` when unset or empty)."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        value = None
    if value is None or value != value or value < minimum:
        what = "a whole number" if kind is int else "a number"
        raise OptionError(f"{name}={raw!r} is not {what} of at least {minimum:g}; set it to one, or unset it for the default ({default:g})")
    return value
