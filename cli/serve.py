"""`embed serve`: an HTTP API and a web page over a store."""

from __future__ import annotations

from pathlib import Path

import typer

from .common import fail, run_guarded, say

EPILOG = (
    "Examples:\n\n"
    "  embed serve photos.h5                       # http://127.0.0.1:8000/\n\n"
    "  embed serve photos.h5 --head heads/photos-logistic --port 8080\n\n"
    "  embed serve photos.h5 --anomalies knn --anomalies-fit-on label=ok   # browse the odd ones\n\n"
    "  embed serve photos.h5 --host 0.0.0.0        # prints a URL with a generated access token\n\n"
    "API (described at /openapi.json): GET /api/search?id=ID&k=10[&where=label=cat] | ?text=..., "
    "POST /api/search (image body), GET /api/items/ID, GET /api/thumb/ID, GET /api/map, "
    "GET /api/recommend?like=ID[,ID...]&k=10[&dislike=...], POST /api/predict (image body, with --head), "
    "GET /api/anomalies (with --anomalies), GET /api/audit (and the page /audit), GET /api/info."
)


def register(app: typer.Typer) -> None:
    @app.command(epilog=EPILOG)
    def serve(
        store: Path = typer.Argument(..., metavar="STORE", help="A store built by `embed build`."),
        head: Path = typer.Option(None, "--head", help="A saved head for POST /api/predict."),
        host: str = typer.Option("127.0.0.1", "--host", help="Interface to bind; loopback by default. Any other needs a token."),
        port: int = typer.Option(8000, "--port", min=0, max=65535, help="Port (0 picks a free one)."),
        token: str = typer.Option(None, "--token", envvar="EMBED_SERVE_TOKEN",
                                  help="Access token required on every request (generated off loopback when not given)."),
        allow_host: list[str] = typer.Option([], "--allow-host", help="Another Host name clients may use (repeatable)."),
        vector_set: str = typer.Option(None, "--set", help="Vector set name or encoder id, when the store has several."),
        weights: Path = typer.Option(None, "--weights", help="The local weights file the store was built with."),
        max_upload_mb: float = typer.Option(10.0, "--max-upload-mb", min=0.01, help="Largest accepted upload (413 above)."),
        max_connections: int = typer.Option(1000, "--max-connections", min=1, help="Connections at once (503 beyond)."),
        header_timeout: float = typer.Option(10.0, "--header-timeout", min=0.1, help="Seconds a client has to send a request head."),
        body_timeout: float = typer.Option(30.0, "--body-timeout", min=0.1, help="Seconds a client has to send a request body (408)."),
        anomalies: str = typer.Option(None, "--anomalies", help="A detector (knn, mahalanobis, iforest, ...) whose ranking the page browses."),
        anomalies_fit_on: str = typer.Option(None, "--anomalies-fit-on", help="Fit the --anomalies detector on these items, e.g. label=ok (needs --anomalies)."),
        device: str = typer.Option("auto", "--device", help="auto | cpu | cuda (for embedding uploads)."),
    ) -> None:
        """Serve search, thumbnails, a map of the store and predictions over HTTP, with a web page."""
        from embedstore.serve.server import Limits, make_server, open_api

        if token is not None and len(token) < 16:
            fail("--token must be at least 16 characters (or leave it out to get a generated one)")
        api = run_guarded(open_api, store, head=str(head) if head else None, vector_set=vector_set,
                          weights=str(weights) if weights else None, device=device, max_upload=int(max_upload_mb * 2**20),
                          anomalies=anomalies, anomalies_fit_on=anomalies_fit_on)
        limits = Limits(header_timeout=header_timeout, body_timeout=body_timeout, max_connections=max_connections)
        try:
            srv = make_server(api, host, port, token=token, allow_hosts=allow_host, limits=limits)
        except OSError as e:
            fail(f"cannot listen on {host}:{port}: {e.strerror or e}; choose another --port")
        if srv.token:
            say(f"access token required on every request (Authorization: Bearer TOKEN, or open the URL below once): {srv.token}")
        say(f"serving {api.ctx.vs.name} ({len(api.ctx.rows)} items) on {srv.url}  (Ctrl-C to stop)")
        if api.set_note:
            say(f"note: {api.set_note}")
        try:
            srv.serve()
        except KeyboardInterrupt:
            pass
        finally:
            srv.sock.close()
            say("stopped")
