"""A folder of images, read in one of three layouts:

- classes: `root/<class>/...`, one subfolder per class label;
- splits:  `root/<split>/<class>/...` with split folders named train, val (valid, validation, dev),
  test (and the other names in `SPLIT_NAMES`); a split folder that holds files directly gives
  unlabelled items of that split;
- flat:    every file under `root`, no labels.

A classes layout whose class folders each hold split folders (`root/<class>/<split>/...`, as some
datasets ship) is read with both: the label from the class folder, the split from the one inside it;
class folders that mix split folders with others, or only some of which hold split folders, are
refused by `auto` (split and class cannot be told apart); `classes` then reads the labels only.
Files directly in a class folder that holds split folders keep their label, with no split.

Each file is read once: a symbolic link to a file the source holds itself is skipped and listed as
"link -> the id it duplicates", as a second link to a folder already read is. Links to files
outside the source are read, several to one file included (see `_linked_twice`).

`auto` picks one from the top level: no subfolders -> flat; every subfolder a split name -> splits;
no split names -> classes; split names mixed with other names -> an error, because a split folder
read as a class label silently trains a "train vs val" classifier. Item ids are paths relative to
`root` in every layout, so they stay unique across splits."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from ..errors import SourceError
from .items import Item, Source, is_split_name, local_path, shown, stored_uri
from .table import ItemTable

LAYOUTS = ("auto", "classes", "splits", "flat")


# files operating systems drop into folders of pictures; never images (as macOS's .DS_Store, a hidden file)
SYSTEM_FILES = frozenset({"thumbs.db", "ehthumbs.db", "ehthumbs_vista.db", "desktop.ini"})
# folders a NAS or an OS adds beside photos (Synology's thumbnails, macOS archive metadata, Windows'
# recycle bin): their images are not the user's items (Synology's were embedded as a class "@eaDir")
SYSTEM_FOLDERS = frozenset({"@eadir", "__macosx", "$recycle.bin", "system volume information"})
STORE_INSIDE = "file or folder of a store kept inside the source (its catalog and data folder, not items)"
OUTSIDE_CLASS = "top-level file outside any class folder"
LINKED_TWICE = "symbolic link to a file the source already holds (each file is embedded once, under the id shown)"
# what to do about a skip, said beside it in the build summary (sources.open_source's callers)
SKIP_FIXES = {OUTSIDE_CLASS: "the subfolder(s) made this a class layout; for a flat folder of images, pass --layout flat"}


def _is_store_folder(dirpath: str, name: str) -> bool:
    """Whether `name` in `dirpath` is a store's data folder: `photos.h5.d` beside `photos.h5`, holding
    the shards (a store built into its own source folder must not be read back as items)."""
    return (name.endswith(".d") and os.path.isfile(os.path.join(dirpath, name[:-2]))
            and os.path.isdir(os.path.join(dirpath, name, "shards")))


def _walk_files(root: Path, skipped: dict[str, list[str]], keep_top=None, links: list | None = None):
    """Every non-hidden regular file under `root`, sorted; `keep_top(name)` prunes top-level folders.
    A symlinked folder is read like any other (`photos/cat -> /data/cats`), each real folder once: a
    link back up the tree, or a second link to a folder already read, is skipped and said.
    `links` gets (path, (device, inode) of its target) of each symbolic link to a file that is yielded."""
    seen = {os.path.realpath(root)}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        hidden_dirs = [d for d in dirnames if d.startswith(".")]
        for d in hidden_dirs:
            skipped.setdefault("hidden folder", []).append(os.path.join(dirpath, d))
        for d in [d for d in dirnames if d.lower() in SYSTEM_FOLDERS]:
            skipped.setdefault("system folder (NAS thumbnails, archive metadata or a recycle bin)", []).append(
                os.path.join(dirpath, d))
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d.lower() not in SYSTEM_FOLDERS)
        for d in list(dirnames):
            real = os.path.realpath(os.path.join(dirpath, d))
            if real in seen:
                skipped.setdefault("folder already read by another path (a symlink loop, or a second link to it)", []).append(
                    os.path.join(dirpath, d))
                dirnames.remove(d)
            else:
                seen.add(real)
        for d in [d for d in dirnames if _is_store_folder(dirpath, d)]:
            skipped.setdefault(STORE_INSIDE, []).append(os.path.join(dirpath, d))
            dirnames.remove(d)
        if keep_top is not None and dirpath == str(root):
            for d in [d for d in dirnames if not keep_top(d)]:
                skipped.setdefault("top-level folder that is not a split name", []).append(os.path.join(dirpath, d))
            dirnames[:] = [d for d in dirnames if keep_top(d)]
        for name in sorted(filenames):
            full = os.path.join(dirpath, name)
            if name.startswith("."):
                skipped.setdefault("hidden file", []).append(full)
            elif name.lower() in SYSTEM_FILES:
                skipped.setdefault("system file (Windows thumbnail cache or folder settings)", []).append(full)
            elif _is_store_folder(dirpath, name + ".d"):
                skipped.setdefault(STORE_INSIDE, []).append(full)
            else:
                link = os.path.islink(full)
                try:
                    st = os.stat(full)  # follows a link
                except OSError:
                    st = None
                if st is None and link:
                    skipped.setdefault(_broken_link(full), []).append(full)
                elif st is None or not stat.S_ISREG(st.st_mode):
                    skipped.setdefault("not a regular file", []).append(full)
                else:
                    if link and links is not None:
                        links.append((full, (st.st_dev, st.st_ino)))
                    yield Path(full)


def _linked_twice(root: Path, links: list, items) -> dict[str, tuple[str, str]]:
    """{link's id: (link's path, the id it duplicates)} for the symbolic links among the listed
    `items` that lead to a file the listing holds itself (not through a link). Links to files
    outside the source are all kept, even several to one file: content-addressed storage (git-annex,
    DVC's symlink cache, Hugging Face snapshots) links every file of the same bytes to one object,
    and those are distinct items (ids, labels) that happen to share their bytes."""
    link_ids = {shown(Path(full).relative_to(root).as_posix()): key for full, key in links}
    listed = set(items.column("id"))  # a link the layout skipped already (a loose top-level file) is not listed twice
    link_ids = {rel: key for rel, key in link_ids.items() if rel in listed}
    files = {}  # (device, inode) -> id, of the listed files that are not links: a stat each, only when there are links
    for it in items:
        if it.id not in link_ids:
            try:
                st = os.stat(local_path(it.uri))
            except OSError:
                continue
            files.setdefault((st.st_dev, st.st_ino), it.id)
    return {rel: (full, files[key]) for (full, key), rel in
            ((lk, shown(Path(lk[0]).relative_to(root).as_posix())) for lk in links) if key in files and rel in link_ids}


def _broken_link(full: str) -> str:
    """Why a symbolic link leads nowhere: a loop (a -> b -> a) or a missing target."""
    import errno

    try:
        os.stat(full)
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "symbolic link loop (it leads back to itself)"
    return "broken symbolic link (its target does not exist)"


def _is_dir(e: os.DirEntry) -> bool:
    """`DirEntry.is_dir`, False for a link that leads nowhere (a loop raised ELOOP and stopped the
    build; the walk lists such a link as skipped, with its reason)."""
    try:
        return e.is_dir()
    except OSError:
        return False


def _subfolders(path: Path) -> list[str]:
    with os.scandir(path) as entries:
        return sorted(e.name for e in entries if not e.name.startswith(".") and e.name.lower() not in SYSTEM_FOLDERS
                      and _is_dir(e))


def _has_files(path: Path) -> bool:
    """Whether any non-hidden file lies under `path` (the walk stops at the first)."""
    for _dirpath, dirnames, filenames in os.walk(path, followlinks=True):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        if any(not f.startswith(".") for f in filenames):
            return True
    return False


def _names(folders: list[str], most: int = 8) -> str:
    more = f", ... ({len(folders)} folders)" if len(folders) > most else ""
    return ", ".join(folders[:most]) + more if folders else "no folders"


def choose_layout(root: Path, top: list[str], asked: str) -> str:
    """The layout to read `root` with, given its top-level folders `top` and the layout asked for."""
    splits = [d for d in top if is_split_name(d)]
    others = [d for d in top if not is_split_name(d)]
    if asked == "auto":
        if not top:
            return "flat"
        if splits and others:
            raise SourceError(
                f"source folder {root} mixes split folders ({_names(splits)}) with other folders ({_names(others)}) at "
                "its top level, so split and class cannot be told apart; pass --layout classes to read every top-level "
                f"folder as a class label, or --layout splits to read only {_names(splits)} (the others are skipped)")
        return "splits" if splits else "classes"
    if asked == "splits" and not splits:
        inside = [f"{c}/{d}" for c in top[:50] for d in _subfolders(root / c) if is_split_name(d)]
        hint = (f" (its class folders hold split folders, e.g. {inside[0]}: --layout auto reads <class>/<split>/... "
                "with both)" if inside else "")
        raise SourceError(
            f"--layout splits: source folder {root} has no split folder at its top level (found: {_names(top)}){hint}; "
            "expected train, val (or valid/validation/dev), test; use --layout classes for one folder per class, "
            "or --layout flat for no labels")
    return asked


def list_folder(root: Path, labels: bool = True, layout: str = "auto") -> Source:
    """List every non-hidden file under `root`; decoding decides later which are images.
    `labels=False` is `layout="flat"` (the build's --no-labels)."""
    if layout not in LAYOUTS:
        raise SourceError(f"--layout must be one of {', '.join(LAYOUTS)}, not '{layout}'")
    if not labels:
        if layout not in ("auto", "flat"):
            raise SourceError(f"--no-labels means --layout flat; it cannot go with --layout {layout}")
        layout = "flat"
    root = root.resolve()
    skipped: dict[str, list[str]] = {}
    top = []
    for d in _subfolders(root):  # an empty folder (say a class not yet filled) neither labels nor lays out anything
        if _has_files(root / d):
            top.append(d)
        elif not _is_store_folder(str(root), d):
            skipped.setdefault("empty folder (no files under it)", []).append(str(root / d))
    read = choose_layout(root, top, layout)
    nested = read == "classes" and _class_splits(root, top, refuse=layout == "auto")  # root/<class>/<split>/...
    split_has_classes: dict[str, bool] = {}
    items = ItemTable()
    links: list[tuple[str, tuple]] = []
    for f in _walk_files(root, skipped, is_split_name if read == "splits" else None, links):
        rel = shown(f.relative_to(root).as_posix())  # ids and labels: undecodable name bytes shown as \xNN
        parts = rel.split("/")
        label = split = None
        if read == "classes":
            if len(parts) < 2:
                skipped.setdefault(OUTSIDE_CLASS, []).append(str(f))
                continue
            label = parts[0]
            if nested and len(parts) >= 3:  # every subfolder of a class folder is a split folder (_class_splits)
                split = parts[1]  # a file directly in the class folder keeps its label, with no split
        elif read == "splits":
            if len(parts) < 2:
                skipped.setdefault("top-level file outside any split folder", []).append(str(f))
                continue
            split = parts[0]  # as written: the heads' split reader knows the aliases
            if split not in split_has_classes:
                split_has_classes[split] = bool(_subfolders(root / split))
            if len(parts) > 2:
                label = parts[1]
            elif split_has_classes[split]:
                skipped.setdefault("file in a split folder outside any class folder", []).append(str(f))
                continue
        items.append(Item(id=rel, uri=stored_uri(str(f)), label=label, split=split))
    if links:  # rare: the ids are gathered only when the source has symbolic links to files
        twice = _linked_twice(root, links, items)
        if twice:
            items = items.where(lambda it: it.id not in twice)
            skipped.setdefault(LINKED_TWICE, []).extend(f"{full} -> {own}" for full, own in twice.values())
    if not items:
        extra = ""
        if skipped:
            extra = "; skipped: " + ", ".join(f"{len(v)} {k}" for k, v in skipped.items())
            if read == "classes" and OUTSIDE_CLASS in skipped:
                extra += " (for a flat folder without class subfolders, pass --layout flat)"
        raise SourceError(f"source folder {root} has no files to embed{extra}")
    how = "--layout auto" if layout == "auto" else f"--layout {layout}" if labels else "--no-labels"
    why = f"folder names ({how})" if read != "flat" else "no subfolders (--layout auto)" if layout == "auto" else how
    if nested:
        why = f"folder names: class folders holding split folders, <class>/<split>/... ({how})"
    return Source(path=str(root), kind="folder", items=items, skipped=skipped, has_labels=any(it.label for it in items),
                  has_splits=read == "splits" or nested, layout=read, layout_from=why)


def _class_splits(root: Path, classes: list[str], refuse: bool = True) -> bool:
    """Whether the class folders hold split folders (`root/<class>/<split>/...`): True when every
    one holds only split folders, False when none holds any; else refused (`refuse`: --layout auto),
    as a top level that mixes split and class folders is (a split folder read as part of a class
    gives items without splits), or False (--layout classes: the class labels only, as asked)."""
    inside = {c: _subfolders(root / c) for c in classes}
    if not any(is_split_name(d) for c in classes for d in inside[c]):
        return False
    inside = {c: [d for d in ds if _has_files(root / c / d)] for c, ds in inside.items()}  # empty ones lay out nothing
    holding = [c for c in classes if any(is_split_name(d) for d in inside[c])]
    if not holding:
        return False
    mixed = [f"{c}/{d}" for c in holding for d in inside[c] if not is_split_name(d)]
    without = [c for c in classes if c not in holding]
    if (mixed or without) and not refuse:
        return False
    if mixed or without:
        found = f"{_names([f'{c}/{d}' for c in holding for d in inside[c] if is_split_name(d)])}"
        odd = f"other folders beside them ({_names(mixed)})" if mixed else f"class folders without them ({_names(without)})"
        raise SourceError(
            f"source folder {root} has split folders inside class folders ({found}) and {odd}, so split and class "
            "cannot be told apart; expected every class folder to hold only split folders (<class>/<split>/...), or "
            "the usual <split>/<class>/...; move the files into one of those layouts, list them in a CSV manifest "
            "with path, label and split columns, or pass --layout classes to read the class labels only (no splits)")
    return True
