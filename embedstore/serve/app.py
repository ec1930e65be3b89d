"""The web app: Starlette routes over `Api`, behind one guard (Host header, access token, OPTIONS),
with bounded and timed request bodies and JSON errors with one-line reasons.

Imported only by `embed serve` and the server tests (Starlette is not loaded for other commands)."""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlencode

import anyio
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.convertors import PathConvertor, register_url_convertor
from starlette.routing import Match, Route

from .api import Api, ApiError


class _AnyPath(PathConvertor):
    """Starlette's `path`, newlines included: its `.*` stops at one, so an item whose file name has
    a newline (%0A in the URL) was 'no such endpoint' for /api/items and /api/thumb."""

    regex = "[\\s\\S]*"


register_url_convertor("anypath", _AnyPath())

log = logging.getLogger(__name__)
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")
TOKEN_COOKIE = "embed_token"


@dataclass
class Guard:
    """Who may talk to the server: the Host names it answers to, and the token (None: no token)."""

    hosts: set = field(default_factory=lambda: set(LOOPBACK_NAMES))
    token: str | None = None
    body_timeout: float = 30.0  # seconds to receive a whole request body
    drain_max: int = 64 * 2**20  # an oversized body up to this is read and discarded so the client reads its 413
    send_timeout: float = 30.0  # seconds a client may take to accept each part of an answer (then the connection closes)
    upload_slots: int = 4  # bodies buffered at once: memory for uploads is at most upload_slots x the upload limit
    _slots: dict = field(default_factory=dict, repr=False, compare=False)

    def slots(self) -> asyncio.Semaphore:
        """The upload semaphore of the running event loop."""
        loop = asyncio.get_running_loop()
        if loop not in self._slots:
            self._slots.clear()
            self._slots[loop] = asyncio.Semaphore(self.upload_slots)
        return self._slots[loop]


SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "cache-control": "no-store",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
}
AUDIT_CSP = ("default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
             "form-action 'none'")  # the audit page: no script at all
PAGE_CSP = ("default-src 'none'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
            "img-src 'self' data: blob:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")


def error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message.splitlines()[0] if message else "error", "status": status}, status,
                        headers={**SECURITY_HEADERS, **(headers or {})})


def ok(obj) -> Response:
    return Response(json.dumps(obj, default=str), 200, headers=SECURITY_HEADERS, media_type="application/json")


# ---- request bodies ----------------------------------------------------------------------------
async def read_body(request: Request, limit: int, guard: Guard) -> bytes:
    """The request body, at most `limit` bytes, within `guard.body_timeout` seconds.
    Over the limit: 413, after reading and discarding the rest (up to `guard.drain_max`) so a client
    that sends its whole body before reading (urllib, requests) gets the status, not a broken pipe."""
    length = request.headers.get("content-length")
    chunked = "chunked" in request.headers.get("transfer-encoding", "").lower()
    if length is None and not chunked:
        raise ApiError(411, "a Content-Length header is required")
    n = None
    if length is not None:
        try:
            n = int(length)
        except ValueError:
            raise ApiError(400, "Content-Length must be an integer") from None
        if n < 0:
            raise ApiError(400, "Content-Length must not be negative")
    close = {"connection": "close"}
    over = f"the upload is over this server's {limit}-byte limit (--max-upload-mb)"
    if n is not None and n > limit:
        over = f"upload of {n} bytes: {over}"
        if n > guard.drain_max:  # too much even to discard: answer now and close
            raise ApiError(413, over, close)
    parts, got = [], 0
    try:
        with anyio.fail_after(guard.body_timeout):
            async for chunk in request.stream():  # one pass: past the limit, chunks are only counted
                got += len(chunk)
                if got > guard.drain_max:
                    break
                if got <= limit:
                    parts.append(chunk)
    except TimeoutError:
        if got > limit:
            raise ApiError(413, over, close) from None
        raise ApiError(408, f"the request body did not arrive within {guard.body_timeout:g} s", close) from None
    except ClientDisconnect:
        raise ApiError(400, "the client closed the connection before its body was complete", close) from None
    if got > limit:
        raise ApiError(413, over, close)
    return b"".join(parts)


# ---- routes ------------------------------------------------------------------------------------
def make_app(api: Api, guard: Guard | None = None) -> Starlette:
    guard = guard or Guard()

    def q(request: Request, known: tuple = ()) -> dict:
        """The query parameters, less the access token; one the endpoint does not take is refused (a
        misspelt `kk=5` would otherwise be answered with the default silently)."""
        got = {k: v for k, v in request.query_params.items() if k != "token"}
        unknown = sorted(set(got) - set(known))
        if unknown:
            takes = f"it takes {', '.join(known)}" if known else "it takes none"
            raise ApiError(400, f"{request.url.path} has no parameter {unknown[0]!r}; {takes}")
        return got

    async def page(request: Request) -> Response:
        from .page import PAGE

        return Response(PAGE, 200, headers={**SECURITY_HEADERS, "content-security-policy": PAGE_CSP},
                        media_type="text/html; charset=utf-8")

    async def openapi(request: Request) -> Response:
        from .openapi import schema

        return ok(schema(api))

    async def info(request: Request) -> Response:
        q(request)
        return ok(api.info())

    async def search_get(request: Request) -> Response:
        return ok(await run_in_threadpool(api.search_get, q(request, ("id", "text", "k", "where", "include_self", "clip_k"))))

    async def recommend(request: Request) -> Response:
        return ok(await run_in_threadpool(api.recommend, q(request, ("like", "dislike", "k", "where", "diversity", "clusters", "clip_k"))))

    async def upload(request: Request, fn, *args) -> Response:
        """Read the body and answer with `fn(*args, content_type, body)`, holding one of the upload
        slots throughout, so at most `guard.upload_slots` bodies are in memory at once."""
        async with guard.slots():
            data = await read_body(request, api.max_upload, guard)
            return ok(await run_in_threadpool(fn, *args, request.headers.get("content-type", ""), data))

    async def search_post(request: Request) -> Response:
        return await upload(request, api.search_post, q(request, ("k", "where", "clip_k")))

    async def search(request: Request) -> Response:
        return await (search_post if request.method == "POST" else search_get)(request)

    async def predict(request: Request) -> Response:
        q(request)
        return await upload(request, api.predict)

    async def item(request: Request) -> Response:
        q(request)  # off the event loop: an unknown id's answer looks for its reason in the store
        return ok(await run_in_threadpool(api.item, request.path_params["item_id"]))

    async def thumb(request: Request) -> Response:
        png = await run_in_threadpool(api.thumb, request.path_params["item_id"], q(request, ("size",)))
        return Response(png, 200, headers={**SECURITY_HEADERS, "cache-control": "private, max-age=3600"}, media_type="image/png")

    async def anomalies(request: Request) -> Response:
        return ok(api.anomaly_page(q(request, ("offset", "limit"))))

    async def audit_json(request: Request) -> Response:
        q(request)
        return ok(await run_in_threadpool(api.audit))

    async def audit_page(request: Request) -> Response:
        q(request)
        html = await run_in_threadpool(api.audit_html)
        return Response(html, 200, headers={**SECURITY_HEADERS, "content-security-policy": AUDIT_CSP},
                        media_type="text/html; charset=utf-8")

    async def map_(request: Request) -> Response:
        q(request)
        return ok(await run_in_threadpool(api.map))

    routes = [
        Route("/", page, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
        Route("/api/info", info, methods=["GET"]),
        Route("/api/search", search, methods=["GET", "POST"]),
        Route("/api/recommend", recommend, methods=["GET"]),
        Route("/api/predict", predict, methods=["POST"]),
        Route("/api/items/{item_id:anypath}", item, methods=["GET"]),
        Route("/api/thumb/{item_id:anypath}", thumb, methods=["GET"]),
        Route("/api/map", map_, methods=["GET"]),
        Route("/api/anomalies", anomalies, methods=["GET"]),
        Route("/api/audit", audit_json, methods=["GET"]),
        Route("/audit", audit_page, methods=["GET"]),
    ]

    async def on_api_error(request, e: ApiError):
        return error(e.status, str(e), e.headers)

    async def on_http(request, e: HTTPException):
        reason = {404: f"no such endpoint: {request.url.path}",
                  405: f"{request.method} is not allowed on {request.url.path}"}.get(e.status_code, str(e.detail))
        headers = {k.lower(): v for k, v in (e.headers or {}).items()}
        if e.status_code == 405 and "allow" in headers:  # the guard answers OPTIONS on every route
            headers["allow"] = allow_header(set(headers["allow"].split(", ")) | {"OPTIONS"})
        return error(e.status_code, reason, headers)

    async def on_crash(request, e: Exception):
        log.exception("internal error on %s %s", request.method, request.url.path)
        return error(500, f"internal error ({type(e).__name__}); the server log has the details")

    app = Starlette(routes=routes, exception_handlers={ApiError: on_api_error, HTTPException: on_http, Exception: on_crash})

    async def fresh(scope, receive, send):
        """Every /api request is answered from the store's newest committed state (looked for at most
        once a second, off the event loop: loading a new state reads the catalog and the index)."""
        if scope["type"] == "http" and scope["path"].startswith("/api/") and api.ctx.refresh_due():
            await run_in_threadpool(api.refresh)
        await app(scope, receive, send)

    return GuardMiddleware(fresh, guard, routes)


# ---- the guard ---------------------------------------------------------------------------------
def host_of(value: str) -> str:
    v = value.strip().lower()
    if v.startswith("["):
        return v[1:v.find("]")] if "]" in v else v
    return v.rsplit(":", 1)[0] if v.count(":") == 1 else v


class GuardMiddleware:
    """Refuses a foreign Host header (DNS rebinding) and a missing or wrong token, and answers
    OPTIONS with the methods a path allows; everything else goes to the app."""

    def __init__(self, app, guard: Guard, routes: list):
        self.app, self.guard, self.routes = app, guard, routes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        send = self._timed(send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        host = host_of(headers.get("host", ""))
        if host not in self.guard.hosts:
            shown = headers.get("host", "")[:100] or "(none)"
            return await error(400, f"Host {shown!r} is not a name this server answers to "
                                    f"({', '.join(sorted(self.guard.hosts))}); see `embed serve --allow-host`")(scope, receive, send)
        set_cookie = None
        if self.guard.token:
            given = _token_in(scope, headers)
            if not given or not hmac.compare_digest(given.encode(), self.guard.token.encode()):
                return await error(401, "this server needs its access token: open the URL `embed serve` printed, or send "
                                        "'Authorization: Bearer TOKEN'", {"www-authenticate": "Bearer"})(scope, receive, send)
            if "token=" in scope.get("query_string", b"").decode("latin-1"):
                set_cookie = f"{TOKEN_COOKIE}={self.guard.token}; HttpOnly; SameSite=Strict; Path=/"
        if scope["method"] == "OPTIONS":
            return await self._options(scope, receive, send)
        if set_cookie is None:
            return await self.app(scope, receive, send)

        async def send_with_cookie(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": list(message.get("headers", [])) + [(b"set-cookie", set_cookie.encode())]}
            await send(message)

        return await self.app(scope, receive, send_with_cookie)

    def _timed(self, send):
        """A client that stops reading its answer is cut off after `send_timeout` s (the error makes
        uvicorn close the connection) instead of holding a connection slot for ever."""
        timeout = self.guard.send_timeout

        async def timed_send(message):
            try:
                await asyncio.wait_for(send(message), timeout)
            except asyncio.TimeoutError:
                raise ConnectionAbortedError(f"the client did not read its answer within {timeout:g} s") from None

        return timed_send

    async def _options(self, scope, receive, send):
        if scope["path"] == "*":
            allowed = {"GET", "HEAD", "POST", "OPTIONS"}
        else:
            allowed = set()
            for route in self.routes:
                for m in ("GET", "POST"):
                    match, _ = route.matches({**scope, "method": m})
                    if match in (Match.FULL, Match.PARTIAL):
                        allowed |= set(route.methods or ())
            if not allowed:
                return await error(404, f"no such endpoint: {scope['path']}")(scope, receive, send)
            allowed.add("OPTIONS")
        await Response(b"", 204, headers={**SECURITY_HEADERS, "allow": allow_header(allowed)})(scope, receive, send)


def allow_header(methods: set[str]) -> str:
    """One order for every Allow header (OPTIONS answers and 405s)."""
    return ", ".join(m for m in ("GET", "HEAD", "POST", "OPTIONS") if m in methods)


def _token_in(scope, headers: dict) -> str | None:
    auth = headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    if headers.get("x-embed-token"):
        return headers["x-embed-token"].strip()
    for k, v in parse_qsl(scope.get("query_string", b"").decode("latin-1")):
        if k == "token":
            return v
    for part in headers.get("cookie", "").split(";"):
        k, _, v = part.strip().partition("=")
        if k == TOKEN_COOKIE:
            return v
    return None


# ---- in-process calls --------------------------------------------------------------------------
@dataclass
class Reply:
    status: int
    headers: dict
    body: bytes

    def json(self):
        return json.loads(self.body)


def call_app(app, method: str, path: str, query: dict, headers: dict, body: bytes | None) -> Reply:
    """Run one request through `app` without sockets (query as parse_qs gives it, or plain values)."""
    hdrs = {k.lower(): str(v) for k, v in headers.items()}
    hdrs.setdefault("host", "127.0.0.1")
    if body is not None:
        hdrs.setdefault("content-length", str(len(body)))
    qs = urlencode([(k, x) for k, v in query.items() for x in (v if isinstance(v, (list, tuple)) else [v])])
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method.upper(),
             "scheme": "http", "path": path, "raw_path": path.encode(), "root_path": "", "query_string": qs.encode(),
             "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in hdrs.items()],
             "client": ("127.0.0.1", 0), "server": ("127.0.0.1", 0)}
    sent = {"body": False}
    out = {"status": 0, "headers": {}, "body": []}

    async def receive():
        if not sent["body"]:
            sent["body"] = True
            return {"type": "http.request", "body": body or b"", "more_body": False}
        return {"type": "http.disconnect"}

    async def send(message):
        if message["type"] == "http.response.start":
            out["status"] = message["status"]
            out["headers"] = {k.decode("latin-1"): v.decode("latin-1") for k, v in message.get("headers", [])}
        elif message["type"] == "http.response.body":
            out["body"].append(message.get("body", b""))

    asyncio.run(app(scope, receive, send))
    return Reply(out["status"], out["headers"], b"".join(out["body"]))
