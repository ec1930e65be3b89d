"""What the server answers, as plain methods of `Api` (no web framework here: `app.py` routes HTTP
to these methods). Each takes parsed arguments and returns a JSON-able dict or bytes, or raises
`ApiError(status, one-line reason)`.

Only items of the store are ever served: thumbnails are looked up by item id in the store's items
table, never by a path taken from the request, so there is nothing to traverse; no answer carries
a server file path."""

from __future__ import annotations

import os
import re
import threading

import numpy as np

from ..errors import EmbedstoreError
from ..store.select import metadata_keys

MAX_UPLOAD = 10 * 1024 * 1024
MAX_K = 1000
MAX_UPLOAD_PIXELS = 40_000_000


# the CLI's flags in messages of the shared search / recommend code, and what follows when it is their value
_CLI_FLAG = re.compile(r"(?<![\w-])(?:-(k) (?=\d)|--(where) (?=['\"]|[^\s;)]*=)|--(where|id|text|diversity|like|dislike|clusters|exact"
                       r"|include-self)\b|-(k)\b)")


def api_words(message: str) -> str:
    """A message from the shared search / recommend code in the server's words: its query
    parameters (k=5, where='...', 'like') rather than the CLI's flags (-k 5, --where '...', --like)."""
    def name(m) -> str:
        if m.group(1) or m.group(2):  # a flag and its value
            return f"{m.group(1) or m.group(2)}="
        return "'" + (m.group(3) or m.group(4)).replace("-", "_") + "'"

    return _CLI_FLAG.sub(name, message)


class ApiError(Exception):
    def __init__(self, status: int, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.headers = status, headers or {}


# the words a boolean query parameter takes (include_self=1, clip_k=yes), one parser for all of them
TRUE_WORDS, FALSE_WORDS = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def bool_arg(query, name: str, default: bool = False) -> bool:
    raw = query.get(name)
    if raw is None:
        return default
    v = raw.strip().lower()
    if v in TRUE_WORDS or v in FALSE_WORDS:
        return v in TRUE_WORDS
    raise ApiError(400, f"'{name}' must be one of {', '.join(TRUE_WORDS)} (yes) or {', '.join(FALSE_WORDS)} (no), not {raw!r}")


def serve_words(message: str) -> str:
    """A message of the anomaly detector's code in `embed serve`'s words: its `--fit-on` is serve's
    `--anomalies-fit-on`."""
    return re.sub(r"(?<![\w-])--fit-on\b", "--anomalies-fit-on", message)


def clipped(clip: bool, k: int, where: str | None, call):
    """(call(k), k, None), or with `clip` (clip_k=1, as the page asks) when fewer than k items can
    come back: (call(room), room, a note saying so). The count is the library's own (check_k's
    KTooLarge), so the server and the CLI agree on it; every library error is a 400."""
    from ..search.query import KTooLarge

    try:
        try:
            return call(k), k, None
        except KTooLarge as e:
            if not clip or e.room < 1:
                raise
            what = f"match {where}" if where else "there are"
            after = e.after.replace(" (the query item itself left out)", " once the query item is left out")
            return call(e.room), e.room, f"only {e.room} item(s) {what}{after}: showing all {e.room}, not the k={k} asked for"
    except EmbedstoreError as e:
        raise ApiError(400, api_words(str(e))) from None


def int_arg(query, name: str, default: int, lo: int, hi: int) -> int:
    raw = query.get(name)
    if raw is None:
        return default
    try:
        v = int(raw)
    except ValueError:
        raise ApiError(400, f"'{name}' must be an integer, not {raw!r}") from None
    if not lo <= v <= hi:
        raise ApiError(400, f"'{name}' must be between {lo} and {hi}, not {v}")
    return v


class Api:
    """The store opened for serving: search, items, thumbnails, the 2-D map, predictions.
    `handle(method, path, query, headers, body)` runs one request through the whole web app in
    process (routing, guards, errors), for tests and scripts."""

    def __init__(self, ctx, head=None, head_doc: dict | None = None, max_upload: int = MAX_UPLOAD,
                 max_upload_pixels: int = MAX_UPLOAD_PIXELS, decode_budget: int | None = None, anomalies=None,
                 store_name: str = "", set_note: str = ""):
        from .images import DEFAULT_BUDGET, DecodeBudget, Thumbnailer

        self.ctx, self.head, self.head_doc, self.max_upload = ctx, head, head_doc, max_upload
        self.max_upload_pixels = max_upload_pixels
        self.store_name = _store_name(store_name)  # the file name only: server paths stay on the server
        self.set_note = set_note  # why the served set is not the one `embed search` picks, if it is not
        self.budget = DecodeBudget(decode_budget or DEFAULT_BUDGET)
        self.thumbs = Thumbnailer(self.budget)
        self._embed_lock = threading.Lock()  # one forward pass at a time
        self._map_lock = threading.Lock()
        self._map = None  # (snapshot stamp, map): computed on first request, again after a build changes the store
        self._refresh_lock = threading.Lock()
        self._audit_lock = threading.Lock()
        self._audit = None  # (snapshot stamp, AuditReport): `embed audit` of the served set, run on first request
        self._app = None
        self.anomalies = _ranking(anomalies) if anomalies is not None else None

    # ---- in-process requests -----------------------------------------------------------------
    def handle(self, method: str, path: str, query: dict | None = None, headers: dict | None = None,
               body: bytes | None = None):
        """One request through the ASGI app without sockets -> `Reply(status, headers, body)`."""
        from .app import call_app, make_app

        if self._app is None:
            self._app = make_app(self)
        return call_app(self._app, method, path, query or {}, headers or {}, body)

    def refresh(self) -> None:
        """Take up the store's newest committed state (a build that finished or committed since), at
        most once a second: every /api request asks before it is answered, so ids, counts, the map
        and search all come from the new state. One request reloads; the others answer meanwhile
        from the state they have."""
        if not self._refresh_lock.acquire(blocking=False):
            return
        try:
            self.ctx.refresh()
        finally:
            self._refresh_lock.release()

    # ---- answers ------------------------------------------------------------------------------
    def info(self) -> dict:
        """What is served: `vectors` and the label and split counts are of the served set's rows (what
        search covers), as `embed info` gives that set's count; its `items` are the store's, quarantined too."""
        r = self.ctx.rows
        labels, counts = np.unique(r.labels[r.labels != ""], return_counts=True)
        sp, sc = np.unique(r.splits[r.splits != ""], return_counts=True)
        return {"store": self.store_name, "vector_set": self.ctx.vs.name, "vector_set_note": self.set_note or None,
                "encoder": self.ctx.vs.encoder,
                "vectors": len(r), "labels": dict(zip(labels.tolist(), counts.tolist())), "splits": dict(zip(sp.tolist(), sc.tolist())),
                "text_search": str(self.ctx.vs.encoder).startswith("open_clip:") or self.ctx.prov.get("modality") == "text",
                "image_search": self.ctx.prov.get("modality", "image") != "text",
                "modality": self.ctx.prov.get("modality", "image"),  # what /api/predict and POST /api/search take: an image or a text
                "max_k": MAX_K,
                "head": self.head_doc.get("kind") if self.head_doc else None,
                "head_classes": [str(c) for c in self.head.classes_] if self.head is not None else [],
                "anomalies": self.anomalies["method"] if self.anomalies else None,
                "index": {k: v for k, v in self.ctx.meta.items() if k not in ("ids_sha256", "path", "file")},
                "metadata_columns": metadata_keys(r.metas) if any(r.metas) else [],  # more --where keys (brand=acme)
                "max_upload": self.max_upload}

    def _hits(self, Q, query, exclude_id: str | None = None) -> dict:
        clip = bool_arg(query, "clip_k")
        most = MAX_K if clip else min(MAX_K, len(self.ctx.rows) - (exclude_id is not None))  # the item itself never comes back
        k = int_arg(query, "k", min(10, max(most, 1)), 1, most)
        where = query.get("where") or None
        (hits, exact, ms), k, note = clipped(clip, k, where, lambda k_: self.ctx.run(Q, k_, where, exclude_id=exclude_id))
        for h in hits:
            h.pop("uri", None)  # file paths stay on the server; thumbnails go by id
        out = {"hits": hits, "exact": exact, "ms": ms, "vector_set": self.ctx.vs.name, "k": k}  # as `embed search --json` names it
        return {**out, "note": note} if note else out

    def search_get(self, query) -> dict:
        item_id, text = query.get("id"), query.get("text")
        if (item_id is None) == (text is None):
            raise ApiError(400, "give exactly one of 'id' or 'text' (or POST an image to /api/search)")
        if item_id is not None:
            self._row(item_id)  # 404 for an unknown id, with `embed search --id`'s reason
            item_id = self.ctx.stored_id(item_id)
            Q = self.ctx.vector_for_id(item_id)
            # as `embed search --id`: the item itself is left out unless include_self=1
            return self._hits(Q, query, None if bool_arg(query, "include_self") else item_id)
        else:
            if not text.strip():
                raise ApiError(400, "'text' is empty")
            Q = self._embed_text(text)
        return self._hits(Q, query)

    def search_post(self, query, content_type: str, data: bytes) -> dict:
        """Neighbours of an uploaded image, or on a text store of the uploaded text (as /api/predict takes it)."""
        texts = self.ctx.prov.get("modality") == "text"
        return self._hits(self._embed_text_upload(content_type, data) if texts else self._embed_upload(content_type, data), query)

    def _embed_text_upload(self, content_type: str, data: bytes) -> np.ndarray:
        """A text store's upload: the body is the text, embedded by the set's service as `embed
        predict` embeds a line of a .txt source."""
        return self._embed_text(self._upload_text(content_type, data))

    def _upload_text(self, content_type: str, data: bytes) -> str:
        """The text of an upload: the body in its Content-Type's charset (UTF-8 when none is said)."""
        ctype, *params = [p.strip() for p in (content_type or "text/plain").split(";")]
        ctype = ctype.lower()
        if ctype not in ("text/plain", "application/octet-stream"):
            raise ApiError(415, f"this store holds text vectors: send the text itself (Content-Type text/plain; charset=utf-8), not {ctype}")
        charset = next((p.split("=", 1)[1].strip().strip('"') for p in params if p.lower().startswith("charset=")), "utf-8")
        try:
            text = data.decode(charset)
        except LookupError:
            raise ApiError(415, f"unknown charset {charset!r}; send the text as UTF-8 (Content-Type text/plain; charset=utf-8)") from None
        except UnicodeDecodeError:
            raise ApiError(400, f"the body is not {charset} text (its Content-Type says so); send it as UTF-8") from None
        if not text.strip():
            raise ApiError(400, "the request body is empty; send the text")
        return text

    def _embed_text(self, text: str) -> np.ndarray:
        """A text's vector from the set's service (a text store's own encoder, or a CLIP text tower)."""
        try:
            with self._embed_lock:
                return self.ctx.vector_for_text(text)
        except EmbedstoreError as e:
            raise ApiError(400, api_words(str(e))) from None

    def _embed_upload(self, content_type: str, data: bytes) -> np.ndarray:
        from .images import ImageRefused, check_upload

        if not data:
            raise ApiError(400, "the request body is empty; send an image")
        ctype = (content_type or "application/octet-stream").split(";")[0].strip().lower()
        if not (ctype.startswith("image/") or ctype == "application/octet-stream"):
            raise ApiError(415, f"send the image itself (Content-Type image/* or application/octet-stream), not {ctype}")
        try:
            held = check_upload(data, self.budget, self.max_upload_pixels)
        except ImageRefused as e:
            raise ApiError(413, str(e)) from None
        try:
            with held, self._embed_lock:
                return self.ctx.vector_for_image_bytes(data, "the uploaded file")
        except EmbedstoreError as e:
            raise ApiError(415 if "cannot be used" in str(e) else 400, str(e)) from None

    def recommend(self, query) -> dict:
        """'More like these': items to recommend to someone who liked `like` (ids, comma-separated)
        and disliked `dislike`, as `embed recommend --like`; the inputs never come back."""
        from ..recommend.query import recommend_in, split_ids

        like, dislike = split_ids(query.get("like")), split_ids(query.get("dislike"))
        if not like:
            raise ApiError(400, "give the liked item ids: like=ID[,ID...]")
        unknown = [i for i in like + dislike if self.ctx.stored_id(i) is None]
        if unknown:
            raise self._no_item(unknown[0], len(unknown) - 1)
        clip = bool_arg(query, "clip_k")
        # k's upper bound here is MAX_K alone: how many items can come back (the liked and disliked
        # ones, and their copies, left out) is recommend_in's check, one message for every door
        k = int_arg(query, "k", 10, 1, MAX_K)
        clusters = int_arg(query, "clusters", 0, 0, 20) or None
        try:
            diversity = float(query.get("diversity", 0) or 0)
        except ValueError:
            raise ApiError(400, f"'diversity' must be a number between 0 and 1, not {query.get('diversity')!r}") from None
        where = query.get("where") or None
        r, k, note = clipped(clip, k, where, lambda k_: recommend_in(self.ctx, like, dislike, k_, where, diversity, clusters))
        hits = [{k_: v for k_, v in h.items() if k_ != "uri"} for h in r.hits]  # file paths stay on the server
        out = {"hits": hits, "exact": r.plan.get("exact", False), "ms": r.ms, "profiles": r.profiles, "liked": r.liked,
               "disliked": r.disliked, "ignored": r.dropped, "diversity": r.diversity, "k": k}
        return {**out, "note": note} if note else out

    def predict(self, content_type: str, data: bytes) -> dict:
        if self.head is None:
            raise ApiError(404, "this server was started without --head; restart with `embed serve STORE --head HEAD`")
        from ..evaluation.seen import seen_mask

        texts = self.ctx.prov.get("modality") == "text"
        text = self._upload_text(content_type, data) if texts else None
        Q = self._embed_text(text) if texts else self._embed_upload(content_type, data)
        P = self.head.predict_proba(Q)[0]  # Q is what the store would hold for this file or text (the embedding service)
        classes = [str(c) for c in self.head.classes_]
        order = np.argsort(-P, kind="stable")  # a tie goes to the first class, as argmax gives it to `embed predict`
        # the content hash a build gives the file (its bytes) or the text (its UTF-8), against the
        # head's fitted and selection items, as `embed predict` flags them
        if texts:  # the body decoded above; hashed as a build hashes the text, without the spaces around it
            from ..ingest.texts import text_sha256

            sha = text_sha256(text)
        else:
            from ..sources.images import content_hash

            sha = content_hash(data)
        seen = bool(seen_mask([sha], getattr(self.head, "seen_keys_", None))[0])
        # `probs` as `embed predict --json` gives it; `ranked` the same in order, highest first (a JSON
        # object's order does not survive everywhere: JavaScript puts integer-like keys, digits, first)
        return {"label": classes[order[0]], "prob": float(P[order[0]]), "probs": {classes[i]: float(P[i]) for i in order},
                "ranked": [{"label": classes[i], "prob": float(P[i])} for i in order], "seen_in_training": seen}

    def _row(self, item_id: str) -> int:
        """The row of an id, given as stored or as `embed ls` prints it (SearchContext.stored_id)."""
        found = self.ctx.stored_id(item_id)
        r = None if found is None else self.ctx.row_of(found)
        if r is None:
            raise self._no_item(item_id)
        return r

    def _no_item(self, item_id: str, more: int = 0) -> ApiError:
        """The 404 for an id with no row in the served set, with `embed search --id`'s reason (the
        one source, SearchContext.vector_for_id: quarantined and why, in another set, close matches,
        or where ids come from), in the server's words and without the store's path."""
        message = api_words(str(self.ctx.missing_id_error(item_id))).replace(str(self.ctx.store), self.store_name)
        return ApiError(404, message + (f" (and {more} more unknown id(s))" if more else ""))

    def item(self, item_id: str) -> dict:
        r, rows = self._row(item_id), self.ctx.rows
        from ..search.query import row_hit

        from urllib.parse import quote

        from ..sources.items import local_path, shown

        out = {k: v for k, v in row_hit(rows, r).items() if k != "uri"}  # the server never shows file paths
        text = self.ctx.prov.get("modality") == "text"  # a text has no thumbnail: none is advertised (null)
        stored = str(rows.ids[r])
        # the file's name as `embed ls` shows names (undecodable bytes as \xNN); the thumbnail's URL quoted, a link to follow
        where = local_path(str(rows.uris[r]))
        if re.match(r"^[A-Za-z]:[\\/]", where):  # a store built on Windows: its file name, never its path
            where = where.replace("\\", "/")
        out.update(id=stored, file=shown(os.path.basename(where)),
                   thumb=None if text else "/api/thumb/" + quote(stored, safe="/", errors="surrogateescape"))
        return out

    def thumb(self, item_id: str, query) -> bytes:
        from ..sources.items import local_path
        from .images import ImageRefused

        r = self._row(item_id)
        size = int_arg(query, "size", 128, 16, 512)
        if self.ctx.prov.get("modality") == "text":
            raise ApiError(404, f"item {item_id!r} is a text; text stores have no thumbnails")
        try:
            return self.thumbs.png(local_path(str(self.ctx.rows.uris[r])), r, size)  # a file:// uri (an odd name) opened as a path
        except ImageRefused as e:
            raise ApiError(404 if "cannot be read" in str(e) else 413, f"no thumbnail for item {item_id!r}: {e}") from None

    def anomaly_page(self, query) -> dict:
        """The anomaly ranking, most unusual first, a page at a time (needs --anomalies)."""
        if self.anomalies is None:
            raise ApiError(404, "this server was started without --anomalies; restart with `embed serve STORE --anomalies knn`")
        a = self.anomalies
        offset = int_arg(query, "offset", 0, 0, max(0, len(a["ranked"]) - 1))
        limit = int_arg(query, "limit", 50, 1, 500)
        return {**{k: v for k, v in a.items() if k != "ranked"}, "offset": offset, "items": a["ranked"][offset:offset + limit]}

    def map(self) -> dict:
        """The store's 2-D map (PCA, streamed; computed once per committed state of the store)."""
        from .projection import pca_map

        with self._map_lock:
            snap = self.ctx._snap
            if self._map is None or self._map[0] != snap.stamp:
                self._map = (snap.stamp, pca_map(snap.rows))
        return self._map[1]


    def audit_report(self):
        """`embed audit` of the served vector set (the same `run_audit` the CLI calls), run on the
        first request and again only after a build changes the store."""
        from ..audit import run_audit

        with self._audit_lock:
            stamp = self.ctx._snap.stamp
            if self._audit is None or self._audit[0] != stamp:
                try:
                    self._audit = (stamp, run_audit(self.ctx.store, vector_set=self.ctx.vs.name, progress=False))
                except EmbedstoreError as e:
                    raise ApiError(400, api_words(str(e))) from None
            return self._audit[1]

    def audit(self) -> dict:
        """The audit as JSON: the CLI's `--json` plus the findings by item id (no file paths)."""
        r = self.audit_report()
        return {**r.to_dict(findings=True, keep=AUDIT_KEEP, paths=False), "store": self.store_name, "out": None, "report": None}

    def audit_html(self) -> str:
        """The audit page (as `embed audit --report` draws it), thumbnails from /api/thumb."""
        from urllib.parse import quote

        from ..reports.audit import audit_page

        r = self.audit_report()
        top = '<p class="muted"><a href="/">back to the store</a> | <a href="/api/audit">as JSON</a></p>'
        return audit_page(r, lambda i: f"/api/thumb/{quote(i, safe='/')}?size=96", top).replace(str(r.store), self.store_name)


RANKING_KEEP = 5000
AUDIT_KEEP = 2000  # findings of each kind in the server's JSON (the CLI's --out has them all)


def _ranking(report) -> dict:
    """What the page shows of an `AnomalyReport`: the top of the ranking, without file paths."""
    keep = ("rank", "id", "label", "split", "score", "percentile", "flagged", "in_fit_set")
    return {"method": report.method, "fit_on": report.fit_on, "fit_count": report.fit_count,
            "scored_count": report.scored_count, "flagged": report.flagged, "threshold": report.threshold,
            "evaluation": report.evaluation, "notes": [serve_words(n) for n in report.notes],
            "warnings": [serve_words(w) for w in report.warnings],  # as `embed anomalies` prints them
            "ranked": [{k: r[k] for k in keep if k in r} for r in report.ranked[:RANKING_KEEP]]}


def _store_name(path: str) -> str:
    """The store's file name only: server paths stay on the server."""
    return str(path).replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
