"""Which vector set a fine-tune starts from. Only a set made by a registry encoder can be: a
fine-tuned (`local-dir:`) encoder's parent must be a registry encoder, and an imported set has no
encoder to train. After a first fine-tune its set becomes the store's default, so without --set the
default is taken among the sets a fine-tune can start from, ranked as the store ranks its sets."""

from __future__ import annotations

from pathlib import Path

from ..errors import FinetuneError


def why_not(vs) -> str | None:
    """Why a fine-tune cannot start from this vector set, or None when it can."""
    enc = str(vs.encoder)
    if enc.startswith("local-dir:"):
        return f"made by the fine-tuned encoder {enc}"
    if enc.startswith("external:"):
        return f"imported ({enc}), with no encoder to train"
    if vs.provenance.get("modality") == "text" and enc.startswith("open_clip:"):
        return f"a CLIP text tower's vectors ({enc})"
    return None


def choose_set(st, which: str | None, store) -> tuple[object, list[str]]:
    """`which` (--set: a name or an encoder id), refused unless a fine-tune can start from it; else the
    default among the sets that can, by `default_rank` (what `Store.select_set` ranks by). Returns
    (the set, notes saying the choice when it is not the store's own default)."""
    from ..store.store import default_rank

    if which is not None:
        vs = st.select_set(which)
        refuse(st, vs, store)
        return vs, []
    sets = st.vector_sets()
    ok = [v for v in sets if why_not(v) is None]
    if not ok:
        if len(sets) <= 1:  # no set at all (select_set says how to build one), or the only one
            refuse(st, st.select_set(None), store)
        said = "; ".join(f"{v.name}: {why_not(v)}" for v in sets)
        raise FinetuneError(f"no vector set of {store} can be fine-tuned ({said}); build one with a registry encoder "
                            f"first: `embed build SOURCE --store {store} --encoder ID` (`embed encoders` lists them)")
    vs = max(ok, key=default_rank)
    default = st.select_set(None)  # the store's default over all its sets (the one other commands use)
    if default.name != vs.name:
        return vs, [f"fine-tuned vector set {vs.name} ({vs.encoder}), the store's default among the sets a fine-tune "
                    f"can start from: its default set {default.name} is {why_not(default)}; choose another with --set"]
    return vs, [vs.note] if len(sets) > 1 and getattr(vs, "note", None) else []


def refuse(st, vs, store, head: str | Path | None = None) -> None:
    """One line, before any model loads, when a fine-tune cannot start from `vs`: what the set is and
    the set to fine-tune instead (for a fine-tuned set, its parent's). `head`: the --head whose set it is."""
    why = why_not(vs)
    if why is None:
        return
    enc = str(vs.encoder)
    if enc.startswith("open_clip:"):  # a CLIP text tower's vectors
        raise FinetuneError(f"{vs.name} holds a CLIP text tower's vectors; fine-tune text stores built with a text "
                            "encoder (st:...), or the CLIP image store")
    parent = _parent(enc) if enc.startswith("local-dir:") else None
    sets = st.vector_sets()
    if parent is not None:
        instead, by_parent = f"its parent {parent}'s set", [v for v in sets if v.encoder == parent]
        if len(by_parent) > 1:  # an encoder id would be ambiguous: --set by name
            set_arg, extra = "--set NAME", f" (NAME: {' or '.join(v.name for v in by_parent)})"
        else:
            set_arg = f"--set {parent}"
            extra = "" if by_parent else f", after `embed build SOURCE --store {store} --encoder {parent}`"
    else:  # the folder is gone or unreadable: the sets a fine-tune can start from
        instead, ok = "a registry encoder's set", [v for v in sets if why_not(v) is None]
        if len(ok) == 1:
            set_arg, extra = f"--set {ok[0].name}", ""
        elif ok:
            set_arg, extra = "--set NAME", f" (NAME: {' or '.join(v.name for v in ok)})"
        else:
            set_arg, extra = "--set ID", f", after `embed build SOURCE --store {store} --encoder ID` with a registry encoder"
    what = ("a fine-tuned encoder is not fine-tuned again (a local-dir encoder's parent must be a registry encoder)"
            if enc.startswith("local-dir:") else "a fine-tune starts from a registry encoder's vectors")
    if head is not None:
        raise FinetuneError(f"head {head} was fitted on vector set {vs.name}, {why}, and {what}; leave out --head, or pass a "
                            f"head fitted on {instead} (`embed fit-head logistic --store {store} {set_arg}`{extra})")
    raise FinetuneError(f"vector set {vs.name} is {why}, and {what}; fine-tune {instead} instead: {set_arg}{extra}")


def _parent(encoder_id: str) -> str | None:
    """The encoder a `local-dir:` encoder was fine-tuned from (its encoder.json), or None if unreadable."""
    from ..encoders.local_dir import read_config
    from ..errors import EmbedstoreError

    try:
        return str(read_config(Path(encoder_id[len("local-dir:"):]))["parent"])
    except (EmbedstoreError, OSError, KeyError, TypeError):
        return None
