"""Assembles the `embed` app from one module per command group."""

from __future__ import annotations

import typer

from . import anomalies, build, demo, encoders, finetune, heads, info, ls, search, serve, verify
from .common import STATE

app = typer.Typer(
    name="embed",
    help="Embed your images once with a frozen pretrained encoder into an HDF5 + FAISS store; "
    "then classify, find anomalies and search on the cached vectors.\n\n"
    "Example: embed build photos/ --store photos.h5 --encoder effnet-lite:lite0",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="Show full tracebacks instead of one-line errors.")) -> None:
    STATE["debug"] = debug


build.register(app)
info.register(app)
ls.register(app)
encoders.register(app)
heads.register(app)
anomalies.register(app)
search.register(app)
serve.register(app)
finetune.register(app)
demo.register(app)
verify.register(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
