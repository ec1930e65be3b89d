"""`embed serve`: an HTTP API and a web page over a store."""

from __future__ import annotations

from pathlib import Path

import typer

from .common import fail, run_guarded, say

EPILOG = (
    "Examples:\n\n"
    "  embed serve photos.h5                       # http://127.0.0.1:8000/\n\n"
    "  embed serve photos.h5 --head heads/photos-logistic --port 8080\n\n"
    "API: GET /api/search?id=ID&k=10[&where=label=cat] | ?text=..., POST /api/search (image body), "
    "GET /api/items/ID, GET /api/thumb/ID, POST /api/predict (image body, with --head), GET /api/info."
)


def register(app: typer.Typer) -> None:
    @app.command(epilog=EPILOG)
    def serve(
        store: Path = typer.Argument(..., help="A store built by `embed build`."),
        head: Path = typer.Option(None, "--head", help="A saved head for POST /api/predict."),
        host: str = typer.Option("127.0.0.1", "--host", help="Interface to bind; loopback by default."),
        port: int = typer.Option(8000, "--port", min=0, max=65535, help="Port (0 picks a free one)."),
        vector_set: str = typer.Option(None, "--set", help="Vector set name or encoder id, when the store has several."),
        weights: Path = typer.Option(None, "--weights", help="The local weights file the store was built with."),
        max_upload_mb: float = typer.Option(10.0, "--max-upload-mb", min=0.01, help="Largest accepted upload."),
        device: str = typer.Option("auto", "--device", help="auto | cpu | cuda (for embedding uploads)."),
    ) -> None:
        """Serve search, thumbnails and predictions over HTTP, with a web page to search by upload or text."""
        from embedstore.serve.server import make_server, open_api

        api = run_guarded(open_api, store, head=str(head) if head else None, vector_set=vector_set,
                          weights=str(weights) if weights else None, device=device, max_upload=int(max_upload_mb * 2**20))
        try:
            srv = make_server(api, host, port)
        except OSError as e:
            fail(f"cannot listen on {host}:{port}: {e.strerror or e}; choose another --port")
        h, p = srv.server_address[:2]
        if host not in ("127.0.0.1", "localhost", "::1"):
            say(f"warning: listening on {host}, not loopback: anyone who can reach this machine can query the store")
        say(f"serving {api.ctx.vs.name} ({len(api.ctx.rows)} items) on http://{h}:{p}/  (Ctrl-C to stop)")
        try:
            srv.serve_forever()
        except KeyboardInterrupt:
            say("stopped")
        finally:
            srv.server_close()
