"""The HTTP server: stdlib ThreadingHTTPServer around `Api`, with bounded request bodies."""

from __future__ import annotations

import logging
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from .api import Api, Response

log = logging.getLogger(__name__)


def make_handler(api: Api):
    class Handler(BaseHTTPRequestHandler):
        server_version = "embedstore"

        def _send(self, r: Response) -> None:
            self.send_response(r.status)
            self.send_header("Content-Type", r.content_type)
            self.send_header("Content-Length", str(len(r.body)))
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(r.body)

        def _dispatch(self, method: str) -> None:
            parts = urlsplit(self.path)
            headers = {k.lower(): v for k, v in self.headers.items()}
            body = None
            if method == "POST":
                length = headers.get("content-length")
                if length is None:
                    return self._send(Response.error(411, "a Content-Length header is required"))
                try:
                    n = int(length)
                except ValueError:
                    return self._send(Response.error(400, "Content-Length must be an integer"))
                if n < 0:
                    return self._send(Response.error(400, "Content-Length must not be negative"))
                if n > api.max_upload:
                    self.close_connection = True  # the body is not read: drop the connection after answering
                    return self._send(Response.error(413, f"upload of {n} bytes is over the {api.max_upload}-byte limit"))
                body = self.rfile.read(n)
            self._send(api.handle(method, parts.path, parse_qs(parts.query), headers, body))

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            self._dispatch("GET")

        def do_POST(self) -> None:  # noqa: N802
            self._dispatch("POST")

        def do_PUT(self) -> None:  # noqa: N802
            self._send(Response.error(405, "PUT is not allowed"))

        do_DELETE = do_PATCH = do_PUT

        def log_message(self, fmt: str, *args) -> None:
            log.info("%s %s", self.address_string(), fmt % args)

    return Handler


def make_server(api: Api, host: str = "127.0.0.1", port: int = 8000) -> ThreadingHTTPServer:
    """A server bound to (host, port); port 0 picks a free one (`server.server_address`)."""
    srv = ThreadingHTTPServer((host, port), make_handler(api))
    srv.daemon_threads = True
    return srv


def open_api(store, head: str | None = None, vector_set: str | None = None, weights: str | None = None,
             device: str = "auto", max_upload: int | None = None) -> Api:
    """The store opened for serving, with an optional head whose provenance must match the store's set."""
    from ..errors import HeadError
    from ..modelfile import load_head
    from ..search.query import SearchContext

    ctx = SearchContext(store, vector_set, weights, device)
    h = doc = None
    if head:
        h, doc = load_head(head)
        from ..store import open_store

        with open_store(store) as st:
            try:
                st.check_provenance(ctx.vs, doc.get("provenance", {}))
            except Exception as e:  # noqa: BLE001 - turned into the head's error type
                raise HeadError(f"head {head} was trained on other vectors than {ctx.vs.name}: {e}") from None
    from .api import MAX_UPLOAD

    return Api(ctx, h, doc, max_upload or MAX_UPLOAD)
