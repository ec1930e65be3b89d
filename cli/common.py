"""Shared CLI plumbing: one-line errors, JSON output, and human-readable numbers."""

from __future__ import annotations

import json
import sys

import typer
import typer.core

from embedstore.naming import one_line  # noqa: F401 - names in tables: one line each (a newline in an id escaped)

STATE = {"debug": False}
# the click typer's commands are built on: recent typer carries its own copy (typer._click), whose
# exceptions and context are not the installed click's
click = getattr(typer.core, "_click", None) or typer.core.click


def fail(message: str, code: int = 2) -> None:
    """The one-line error on stderr and a non-zero exit; a command run with --json also prints it
    as JSON on stdout ({"error", "exit_code"}), so a script reading stdout gets an object, not nothing."""
    typer.echo(f"error: {message}", err=True)
    if _json_asked():
        typer.echo(json.dumps({"error": message, "exit_code": code}))
    raise typer.Exit(code)


def _json_asked() -> bool:
    ctx = click.globals.get_current_context(silent=True)
    return bool(ctx is not None and ctx.params.get("json_out"))


def quiet_option():
    """--quiet / -q: no progress bar (the summary still prints)."""
    return typer.Option(False, "--quiet", "-q", help="No progress bar.")


def emit_json(obj) -> None:
    typer.echo(json.dumps(obj, indent=2, default=str))


def say(line: str = "") -> None:
    typer.echo(line)


def fmt_s(s: float) -> str:
    return f"{s:.1f} s" if s < 120 else f"{s / 60:.1f} min"


def fmt_recall(v) -> str:
    """A measured recall as printed (0.9802, not 0.9802000000000001); '-' when none was measured."""
    return "-" if v is None else str(round(float(v), 4))


def parse_params(items: list[str]) -> dict:
    """--param NAME=VALUE (repeatable) -> {name: int | float | bool | str}."""
    out = {}
    for it in items or []:
        if "=" not in it:
            fail(f"--param '{it}' must look like NAME=VALUE, e.g. --param C=10")
        k, v = it.split("=", 1)
        for conv in (int, float):
            try:
                v = conv(v)
                break
            except ValueError:
                continue
        if v in ("true", "false"):
            v = v == "true"
        out[k.strip()] = v
    return out


def check_output_folders(*outputs: tuple[str, object, str]) -> None:
    """Every option that names a folder to write into, as (option, path or None, what it gets), through
    the one check (atomic.check_output_folder) before the command does any work: a file given as
    --report or --plots is one line and exit 2, and nothing is written."""
    from embedstore.atomic import check_output_folder

    for option, path, holds in outputs:
        if path is not None:
            run_guarded(check_output_folder, path, option, holds)


INTERRUPTED = "interrupted: stopped before finishing (files are written whole or not at all: none is left half-written)"
RESUMABLE = "interrupted: work committed so far is kept; re-run the same command to resume"


def run_guarded(fn, *args, interrupted: str = INTERRUPTED, **kwargs):
    """Call the library; library errors become one line on stderr and a non-zero exit. `interrupted`:
    what Ctrl-C is answered with (RESUMABLE for the commands that pick up where they stopped)."""
    from embedstore.errors import EmbedstoreError

    try:
        return fn(*args, **kwargs)
    except EmbedstoreError as e:
        if STATE["debug"]:
            raise
        fail(str(e), e.exit_code)
    except KeyboardInterrupt:
        typer.echo("\n" + interrupted, err=True)  # on a line of its own, not after a progress bar's last state
        raise typer.Exit(130)
    except (typer.Exit, typer.Abort):
        raise
    except Exception as e:  # noqa: BLE001 - last resort: never a bare traceback without --debug
        if STATE["debug"]:
            raise
        from embedstore.atomic import disk_error

        disk = disk_error(e, getattr(e, "filename", None) or "the output", store=False)
        if disk is not None:  # a read-only, full or forbidden folder met outside the atomic writer (a mkdir, say)
            fail(str(disk), disk.exit_code)
        msg = str(e).splitlines()[0] if str(e) else ""
        fail(f"unexpected {type(e).__name__}: {msg} (re-run with --debug for the traceback)", 1)


def is_tty() -> bool:
    return sys.stderr.isatty()
