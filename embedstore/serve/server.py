"""The server: the app on uvicorn, with the limits a hostile or merely slow client meets.

- headers must arrive within `header_timeout` s of connecting (or of the previous answer), or the
  connection is closed (uvicorn has no such timer of its own); a body within `body_timeout` s (408);
  each part of an answer must be taken by the client within `send_timeout` s; an idle keep-alive
  connection is closed after `keep_alive` s;
- at most `max_connections` connections and requests at once (uvicorn's limit_concurrency: 503
  beyond), a listen backlog of 2048, request heads of at most 64 KiB;
- off loopback an access token is required (see `guard_for`)."""

from __future__ import annotations

import ipaddress
import logging
import secrets
import socket
import threading
from dataclasses import dataclass

from .api import MAX_UPLOAD, Api

log = logging.getLogger(__name__)


@dataclass
class Limits:
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    send_timeout: float = 30.0
    keep_alive: int = 5
    max_connections: int = 1000
    backlog: int = 2048
    max_head_bytes: int = 64 * 1024


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def guard_for(host: str, token: str | None = None, allow_hosts=(), limits: Limits | None = None):
    """(Guard, token) for a server bound to `host`: loopback needs no token unless one is given;
    any other address gets `token` or a generated one. Host headers accepted: the loopback names,
    the bound address (unless a wildcard), this machine's names, and `allow_hosts`."""
    from .app import LOOPBACK_NAMES, Guard

    limits = limits or Limits()
    hosts = set(LOOPBACK_NAMES) | {h.lower() for h in allow_hosts}
    if not is_loopback(host):
        token = token or secrets.token_urlsafe(24)
        if host not in ("0.0.0.0", "::", ""):
            hosts.add(host.lower().strip("[]"))
        for name in {socket.gethostname(), socket.getfqdn()}:
            if name:
                hosts.add(name.lower())
        if host in ("0.0.0.0", "::", ""):  # a wildcard bind: this machine's own addresses too
            try:
                hosts.update(socket.gethostbyname_ex(socket.gethostname())[2])
            except OSError:
                pass
    return Guard(hosts=hosts, token=token, body_timeout=limits.body_timeout, send_timeout=limits.send_timeout), token


def _protocol_class(header_timeout: float):
    """uvicorn's h11 protocol with a deadline on request heads: a client that connects and sends
    nothing, or sends its headers a byte at a time, is disconnected after `header_timeout` s."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeadTimedH11(H11Protocol):
        _head_timer = None

        def connection_made(self, transport):
            super().connection_made(transport)
            self._watch_head()

        def data_received(self, data):
            super().data_received(data)
            self._watch_head()

        def on_response_complete(self):
            super().on_response_complete()
            self._watch_head()

        def connection_lost(self, exc):
            self._stop_head_timer()
            super().connection_lost(exc)

        def _watch_head(self):
            waiting = self.conn.their_state is h11.IDLE and not self.transport.is_closing()
            if waiting and self._head_timer is None:
                self._head_timer = self.loop.call_later(header_timeout, self._head_too_slow)
            elif not waiting:
                self._stop_head_timer()

        def _stop_head_timer(self):
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_too_slow(self):
            self._head_timer = None
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                log.info("closing a connection that sent no complete request head in %g s", header_timeout)
                self.transport.close()

    return HeadTimedH11


# SIGTERM or Ctrl-C: requests in flight get this long to finish, then the server stops anyway (a request
# stuck in a library call once kept a SIGTERMed server up for good)
GRACEFUL_S = 5


def make_server(api: Api, host: str = "127.0.0.1", port: int = 8000, token: str | None = None,
                allow_hosts=(), limits: Limits | None = None):
    """A uvicorn server for `api`, its socket already bound (port 0 picks a free one: `.port`).
    `.token` is the access token (None on loopback without --token). Run with `.serve()`
    (blocking) or `.start()` (a background thread) and `.stop()`."""
    import uvicorn

    from .app import make_app
    from .images import return_freed_memory_to_the_system

    return_freed_memory_to_the_system()
    limits = limits or Limits()
    guard, token = guard_for(host, token, allow_hosts, limits)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(limits.backlog)
    sock.set_inheritable(True)
    config = uvicorn.Config(make_app(api, guard), http=_protocol_class(limits.header_timeout), lifespan="off",
                            timeout_keep_alive=limits.keep_alive, limit_concurrency=limits.max_connections,
                            backlog=limits.backlog, h11_max_incomplete_event_size=limits.max_head_bytes,
                            log_level="warning", access_log=False, server_header=False, proxy_headers=False,
                            ws="none", timeout_graceful_shutdown=GRACEFUL_S)
    return ServerHandle(uvicorn.Server(config), sock, token, guard)


class ServerHandle:
    def __init__(self, server, sock, token, guard):
        self.server, self.sock, self.token, self.guard = server, sock, token, guard
        self.host, self.port = sock.getsockname()[:2]
        self._thread = None

    @property
    def url(self) -> str:
        h = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{h}:{self.port}/" + (f"?token={self.token}" if self.token else "")

    def serve(self) -> None:
        self.server.run(sockets=[self.sock])

    def start(self) -> "ServerHandle":
        self._thread = threading.Thread(target=self.serve, daemon=True, name="embed-serve")
        self._thread.start()
        import time

        for _ in range(500):
            if self.server.started:
                break
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)
        self.sock.close()


def open_api(store, head: str | None = None, vector_set: str | None = None, weights: str | None = None,
             device: str = "auto", max_upload: int | None = None, anomalies: str | None = None,
             anomalies_fit_on: str | None = None, **limits) -> Api:
    """The store opened for serving, with an optional head whose provenance must match the store's set,
    and optionally the anomaly ranking of detector `anomalies` (fitted once, here, on `anomalies_fit_on`)."""
    from ..errors import HeadError, OptionError
    from ..modelfile import load_head
    from ..search.query import SearchContext

    if anomalies_fit_on and not anomalies:  # a fit set for no detector: refused, not ignored
        raise OptionError(f"--anomalies-fit-on {anomalies_fit_on} picks the anomaly detector's fit set, but no detector was "
                          "asked for: add --anomalies METHOD (e.g. --anomalies knn)")

    h = doc = prov = None
    set_note = ""
    if head:
        h, doc = load_head(head)
        from ..heads.apply import head_provenance
        from ..store import open_store

        prov = head_provenance(doc, head)
        if vector_set is None:  # the set the head was fitted on, as `embed evaluate` and `embed predict` pick it
            with open_store(store) as st:
                found, default = st.find_set(prov), st.select_set(None)
            vector_set = found.name if found is not None else None
            if found is not None and found.name != default.name:  # the one door that does not pick the default: say so
                set_note = (f"{found.name} is the set the head was fitted on; `embed search` picks {default.name} "
                            f"unless given --set {found.name}")
    ctx = SearchContext(store, vector_set, weights, device)
    if head:
        with open_store(store) as st:
            try:
                st.check_provenance(ctx.vs, prov)
            except Exception as e:  # noqa: BLE001 - turned into the head's error type
                raise HeadError(f"head {head} was trained on other vectors than {ctx.vs.name}: {e}") from None
    report = None
    if anomalies:
        from ..detectors.anomalies import find_anomalies
        from ..errors import EmbedstoreError
        from .api import serve_words

        try:
            report, _ = find_anomalies(store, anomalies, fit_on=anomalies_fit_on, vector_set=ctx.vs.name, weights=weights,
                                       device=device, progress=False)
        except EmbedstoreError as e:  # the same error, naming serve's option (--anomalies-fit-on), not the anomalies command's
            e.args = (serve_words(str(e)),)
            raise
    return Api(ctx, h, doc, max_upload or MAX_UPLOAD, anomalies=report, store_name=str(store), set_note=set_note, **limits)
