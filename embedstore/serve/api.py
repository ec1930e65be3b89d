"""The HTTP API as a plain function of (method, path, query, headers, body) -> Response, so it is
tested without sockets as well as through a real server.

Only items of the store are ever served: thumbnails are looked up by item id in the store's items
table, never by a path taken from the request, so there is nothing to traverse."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from urllib.parse import unquote

import numpy as np

from ..errors import EmbedstoreError

MAX_UPLOAD = 10 * 1024 * 1024
MAX_K = 1000


@dataclass
class Response:
    status: int
    content_type: str
    body: bytes

    @classmethod
    def json(cls, obj, status: int = 200) -> "Response":
        return cls(status, "application/json", json.dumps(obj, default=str).encode())

    @classmethod
    def error(cls, status: int, message: str) -> "Response":
        return cls.json({"error": message, "status": status}, status)


class ApiError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def _int(query: dict, name: str, default: int, lo: int, hi: int) -> int:
    raw = query.get(name, [str(default)])[0]
    try:
        v = int(raw)
    except ValueError:
        raise ApiError(400, f"'{name}' must be an integer, not {raw!r}") from None
    if not lo <= v <= hi:
        raise ApiError(400, f"'{name}' must be between {lo} and {hi}, not {v}")
    return v


class Api:
    """Routes: GET / (the page), GET /api/info, GET /api/search?id=|text=, POST /api/search (image body),
    GET /api/items/<id>, GET /api/thumb/<id>, POST /api/predict (image body; needs --head)."""

    def __init__(self, ctx, head=None, head_doc: dict | None = None, max_upload: int = MAX_UPLOAD):
        self.ctx, self.head, self.head_doc, self.max_upload = ctx, head, head_doc, max_upload
        self._lock = threading.Lock()  # one forward pass at a time

    def handle(self, method: str, path: str, query: dict, headers: dict, body: bytes | None) -> Response:
        try:
            return self._route(method, path, query, headers, body)
        except ApiError as e:
            return Response.error(e.status, str(e))
        except EmbedstoreError as e:
            return Response.error(400, str(e))

    def _route(self, method, path, query, headers, body) -> Response:
        routes = {
            ("GET", "/"): self.page,
            ("GET", "/api/info"): self.info,
            ("GET", "/api/search"): self.search_get,
            ("POST", "/api/search"): self.search_post,
            ("POST", "/api/predict"): self.predict,
        }
        if (method, path) in routes:
            return routes[(method, path)](query=query, headers=headers, body=body)
        for prefix, fn in (("/api/items/", self.item), ("/api/thumb/", self.thumb)):
            if path.startswith(prefix):
                if method != "GET":
                    raise ApiError(405, f"{path} answers GET only")
                return fn(unquote(path[len(prefix):]), query)
        if any(p == path for _, p in routes):
            raise ApiError(405, f"{method} is not allowed on {path}")
        raise ApiError(404, f"no such endpoint: {path}")

    # ---- handlers --------------------------------------------------------------------------
    def page(self, **_) -> Response:
        from .page import PAGE

        return Response(200, "text/html; charset=utf-8", PAGE.encode())

    def info(self, **_) -> Response:
        r = self.ctx.rows
        labels, counts = np.unique(r.labels[r.labels != ""], return_counts=True)
        return Response.json({"store": self.ctx.store, "vector_set": self.ctx.vs.name, "encoder": self.ctx.vs.encoder,
                              "items": len(r), "labels": dict(zip(labels.tolist(), counts.tolist())),
                              "text_search": str(self.ctx.vs.encoder).startswith("open_clip:") or self.ctx.prov.get("modality") == "text",
                              "head": self.head_doc.get("kind") if self.head_doc else None,
                              "index": {k: v for k, v in self.ctx.meta.items() if k != "ids_sha256"}})

    def _hits(self, Q, query) -> Response:
        k = _int(query, "k", 10, 1, min(MAX_K, len(self.ctx.rows)))
        where = query.get("where", [None])[0]
        hits, exact, ms = self.ctx.run(Q, k, where)
        for h in hits:
            h.pop("uri", None)  # file paths stay on the server; thumbnails go by id
        return Response.json({"hits": hits, "exact": exact, "ms": ms})

    def search_get(self, query, **_) -> Response:
        item_id, text = query.get("id", [None])[0], query.get("text", [None])[0]
        if (item_id is None) == (text is None):
            raise ApiError(400, "give exactly one of 'id' or 'text' (or POST an image to /api/search)")
        if item_id is not None:
            if self.ctx.row_of(item_id) is None:
                raise ApiError(404, f"no item with id {item_id!r}")
            Q = self.ctx.vector_for_id(item_id)
        else:
            if not text.strip():
                raise ApiError(400, "'text' is empty")
            with self._lock:
                Q = self.ctx.vector_for_text(text)
        return self._hits(Q, query)

    def _image_body(self, headers: dict, body: bytes | None) -> bytes:
        if body is None:
            raise ApiError(411, "send the image as the request body, with a Content-Length")
        if not body:
            raise ApiError(400, "the request body is empty; send an image")
        ctype = headers.get("content-type", "application/octet-stream").split(";")[0].strip().lower()
        if not (ctype.startswith("image/") or ctype == "application/octet-stream"):
            raise ApiError(415, f"send the image itself (Content-Type image/* or application/octet-stream), not {ctype}")
        return body

    def search_post(self, query, headers, body) -> Response:
        data = self._image_body(headers, body)
        with self._lock:
            Q = self._embed_upload(data)
        return self._hits(Q, query)

    def _embed_upload(self, data: bytes) -> np.ndarray:
        try:
            return self.ctx.vector_for_image_bytes(data, "the uploaded file")
        except EmbedstoreError as e:
            raise ApiError(415 if "cannot be used" in str(e) else 400, str(e)) from None

    def predict(self, query, headers, body) -> Response:
        if self.head is None:
            raise ApiError(404, "this server was started without --head; restart with `embed serve STORE --head HEAD`")
        data = self._image_body(headers, body)
        with self._lock:
            Q = self._embed_upload(data)
        P = self.head.predict_proba(Q)[0]  # Q is what the store would hold for this file (the embedding service)
        classes = [str(c) for c in self.head.classes_]
        order = np.argsort(-P)
        return Response.json({"label": classes[order[0]], "prob": float(P[order[0]]),
                              "probs": {classes[i]: float(P[i]) for i in order}})

    def item(self, item_id: str, query) -> Response:
        r = self.ctx.row_of(item_id)
        if r is None:
            raise ApiError(404, f"no item with id {item_id!r}")
        rows = self.ctx.rows
        return Response.json({"id": item_id, "label": str(rows.labels[r]), "split": str(rows.splits[r]),
                              "file": str(rows.uris[r]).rsplit("/", 1)[-1], "thumb": f"/api/thumb/{item_id}"})

    def thumb(self, item_id: str, query) -> Response:
        from ..reports.plots import thumbnail_png

        r = self.ctx.row_of(item_id)
        if r is None:
            raise ApiError(404, f"no item with id {item_id!r}")
        size = _int(query, "size", 128, 16, 512)
        png = thumbnail_png(str(self.ctx.rows.uris[r]), size)
        if png is None:
            raise ApiError(404, f"the file of item {item_id!r} cannot be read any more")
        return Response(200, "image/png", png)
