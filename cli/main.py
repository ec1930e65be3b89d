"""Assembles the `embed` app from one module per command group."""

from __future__ import annotations

import typer
from typer.core import TyperGroup

from . import anomalies, audit, build, demo, encoders, exchange, finetune, heads, info, ls, neighbors, recommend, search, serve, verify
from .common import STATE, click as _click

UsageError, NoArgsIsHelpError = _click.exceptions.UsageError, _click.exceptions.NoArgsIsHelpError


class _UsageError(UsageError):
    """Click's usage error in the one-line form of every other `embed` error: "error: ...", with
    where the fix is, instead of four lines (Usage:, Try ..., a blank line, Error: ...)."""

    def show(self, file=None) -> None:
        msg = self.message.rstrip(".")
        where = self.ctx.command_path if self.ctx is not None else "embed"
        line = f"{msg[:1].lower()}{msg[1:]} (`{where} --help` lists its options and arguments)"
        _click.echo(f"error: {line}", file=file, err=True)
        if STATE.get("json_in_args"):  # as `fail` does for a command run with --json: an object on stdout, not nothing
            import json

            _click.echo(json.dumps({"error": line, "exit_code": self.exit_code}))


def _one_line(e: UsageError) -> UsageError:
    if isinstance(e, NoArgsIsHelpError):  # `embed` alone: the help itself, as asked for
        return e
    return _UsageError(e.format_message(), e.ctx)  # formatted here: a missing or bad parameter's message names it


class _Group(TyperGroup):
    """The `embed` group: usage errors of the group and of its commands are printed in one line."""

    def make_context(self, info_name, args, *rest, **kwargs):
        STATE["json_in_args"] = "--json" in args  # read before parsing: a usage error comes before any parameter is set
        try:
            return super().make_context(info_name, args, *rest, **kwargs)
        except UsageError as e:
            raise _one_line(e) from None

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except UsageError as e:
            raise _one_line(e) from None


app = typer.Typer(
    cls=_Group,
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
    try:
        app()
    except SystemExit as e:
        code = e.code
    else:
        code = 0
    quick_exit(code)


def quick_exit(code) -> None:
    """End the `embed` process without the interpreter's teardown of its modules and objects, which
    costs every command about a second once torch and timm are imported (measured here: a process
    that only imports them spends 1.1 s exiting; an `embed build` of 400 images 1.2-1.4 s after its
    work is done). Nothing is lost by it: whatever a command writes to a store is fsynced and
    renamed before the command returns (the store survives kill -9 at any point), and what the
    interpreter's shutdown would still do that matters is done first: non-daemon threads are
    joined, atexit handlers run (multiprocessing, Ray, logging, temporary files) and the output is
    flushed. EMBEDSTORE_SLOW_EXIT=1 exits the ordinary way."""
    import atexit
    import os
    import sys
    import threading

    if isinstance(code, str):  # sys.exit("message"): printed, status 1
        print(code, file=sys.stderr)
        code = 1
    code = 0 if code is None else code
    shutdown = getattr(threading, "_shutdown", None)  # joins non-daemon threads, as the interpreter's exit does
    if os.environ.get("EMBEDSTORE_SLOW_EXIT") == "1" or shutdown is None or not isinstance(code, int):
        sys.exit(code)
    shutdown()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe or stream: nothing more can reach it
            pass
    os._exit(code)


if __name__ == "__main__":
    main()
