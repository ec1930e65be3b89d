"""Assembles the `embed` app from one module per command group."""

from __future__ import annotations

import typer

from . import anomalies, audit, build, demo, encoders, exchange, finetune, heads, info, ls, neighbors, recommend, search, serve, verify
from .common import STATE

app = typer.Typer(
    name="embed",
    help="Embed your images once with a frozen pretrained encoder into an HDF5 + FAISS store; "
    "then classify, find anomalies and search on the cached vectors.\n\n"
    "Example: embed build photos/ --store photos.h5 --encoder effnet-lite:lite0",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # help texts are plain: "[default: ...]" and "embedstore[ray]" must print as written
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
neighbors.register(app)
exchange.register(app)
recommend.register(app)
audit.register(app)


def _keep_examples_unwrapped() -> None:
    """Click rewraps help paragraphs; command lines in epilogs (the indented paragraphs) go into
    one '\\b' block each so they print as written, one command a line."""
    for cmd in app.registered_commands:
        if not cmd.epilog:
            continue
        out, block = [], []
        for para in cmd.epilog.split("\n\n"):
            if para.startswith("  "):
                block.append(para)
                continue
            if block:
                out.append("\b\n" + "\n".join(block))
                block = []
            out.append(para)
        if block:
            out.append("\b\n" + "\n".join(block))
        cmd.epilog = "\n\n".join(out)


_keep_examples_unwrapped()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
