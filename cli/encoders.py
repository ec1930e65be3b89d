"""`embed encoders`: the encoders that exist, and the layers of one."""

from __future__ import annotations

import typer

from .common import emit_json, run_guarded, say


def _rows(pattern: str) -> list[dict]:
    from embedstore.encoders import encoder_availability, list_encoders

    return [{**c.describe(), "available": encoder_availability(c)} for c in list_encoders(pattern)]


def _layers(encoder_id: str) -> list[str]:
    from embedstore.encoders import create_encoder

    return create_encoder(encoder_id).layer_names()


def register(app: typer.Typer) -> None:
    @app.command(epilog="Examples:\n\n  embed encoders\n\n  embed encoders 'torchvision:*' --json\n\n  embed encoders --layers torchvision:resnet50")
    def encoders(
        pattern: str = typer.Argument("*", help="Glob over encoder ids."),
        layers: str = typer.Option(None, "--layers", help="List the layer names of this encoder (for `build --layer`)."),
        json_out: bool = typer.Option(False, "--json", help="Print as JSON."),
    ) -> None:
        """Encoders, their vector size, input size, and whether weights are available offline."""
        if layers:
            names = run_guarded(_layers, layers)
            if json_out:
                emit_json(names)
            else:
                for n in names:
                    say(n)
            return
        rows = run_guarded(_rows, pattern)
        if json_out:
            emit_json(rows)
            return
        say(f"{'id':40} {'dim':>5} {'input':>5}  {'offline':9} weights")
        for r in rows:
            offline = {"bundled": "yes", "cached": "yes", "download": "no"}.get(r["available"], r["available"])
            say(f"{r['id']:40} {r['dim']:>5} {r['input_size']:>5}  {offline:9} {r['weights']}")
        say("\nAny torchvision classifier (torchvision:<arch>[/<WEIGHTS>]) and any open_clip model "
            "(open_clip:<arch>/<tag>) also work; --weights FILE loads local weights when offline.")
