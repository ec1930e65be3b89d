"""Comparing provenance: two values are the same when their JSON forms are equal."""

from __future__ import annotations

import json

from .schema import KEY_FIELDS

JSON_ATTRS = ("preprocess", "library_versions")


def _decode_attrs(attrs) -> dict:
    out = {}
    for k, v in attrs.items():
        v = v.item() if hasattr(v, "item") and not isinstance(v, (str, bytes)) else v
        if isinstance(v, bytes):
            v = v.decode()
        if k in JSON_ATTRS and isinstance(v, str):
            v = json.loads(v)
        out[k] = v
    return out


def _same(a, b) -> bool:
    if isinstance(a, str) and not isinstance(b, str):
        try:
            a = json.loads(a)
        except ValueError:
            pass
    if isinstance(b, str) and not isinstance(a, str):
        try:
            b = json.loads(b)
        except ValueError:
            pass
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def provenance_diffs(found: dict, expected: dict) -> list[str]:
    """The key provenance fields that `expected` names and `found` differs on."""
    return [k for k in KEY_FIELDS if k in expected and not _same(found.get(k), expected[k])]


def describe_diffs(found: dict, expected: dict, diffs: list[str]) -> tuple[str, str]:
    """('key=value, ...' as found, as expected) for the differing fields; a dict field (preprocess)
    is shown by its differing entries alone (preprocess.resize_mode=squash), since a cut-off JSON
    prefix hides the difference."""
    got, want = [], []
    if "encoder" in diffs:  # another model: every other field differs with it, and saying so is the whole story
        diffs = ["encoder"] + [k for k in diffs if k in ("layer",)]
    for k in diffs:
        a, b = found.get(k), expected.get(k)
        a, b = _as_dict(a), _as_dict(b)
        if isinstance(a, dict) and isinstance(b, dict):
            for sub in sorted(set(a) | set(b)):
                if not _same(a.get(sub), b.get(sub)):
                    got.append(f"{k}.{sub}={_short(a.get(sub, '(default)'))}")
                    want.append(f"{k}.{sub}={_short(b.get(sub, '(default)'))}")
        else:
            got.append(f"{k}={_short(a)}")
            want.append(f"{k}={_short(b)}")
    if len(got) > 4:  # the first few differences say it; the rest would bury them
        got, want = got[:4] + [f"and {len(got) - 4} more"], want[:4] + [f"and {len(want) - 4} more"]
    return ", ".join(got), ", ".join(want)


def _as_dict(v):
    if isinstance(v, str) and v.startswith("{"):
        try:
            return json.loads(v)
        except ValueError:
            return v
    return v


def _short(v) -> str:
    s = v if isinstance(v, str) else json.dumps(v, sort_keys=True)
    return s if len(s) <= 40 else s[:16] + "..."
