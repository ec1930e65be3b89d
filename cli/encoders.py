"""`embed encoders`: the encoders that exist, and the layers of one."""

from __future__ import annotations

import typer

from .common import emit_json, run_guarded, say


def _rows(pattern: str) -> list[dict]:
    from embedstore.encoders import encoder_availability, list_encoders

    return [{**c.describe(), "available": encoder_availability(c)} for c in list_encoders(pattern)]


def _layers(encoder_id: str) -> list[str]:
    """Layer names need the architecture only: built without weights (works offline), except a
    local-dir encoder, whose folder holds its architecture and weights together."""
    from embedstore.encoders import create_encoder
    from embedstore.encoders.weights import STRUCTURE_ONLY

    weights = None if encoder_id.startswith("local-dir:") else STRUCTURE_ONLY
    return create_encoder(encoder_id, weights=weights).layer_names()


def register(app: typer.Typer) -> None:
    @app.command(epilog="Examples:\n\n  embed encoders\n\n  embed encoders 'timm:*' --json\n\n  embed encoders --layers timm:vit_small_patch14_dinov2.lvd142m")
    def encoders(
        pattern: str = typer.Argument("*", metavar="PATTERN", help="Glob over encoder ids."),
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
        say(f"{'id':48} {'dim':>5} {'input':>5}  {'offline':9} weights")
        for r in rows:
            offline = {"bundled": "yes", "cached": "yes", "download": "no"}.get(r["available"], r["available"])
            say(f"{r['id']:48} {r['dim']:>5} {r['input_size']:>5}  {offline:9} {r['weights']}")
        say("\nAny torchvision classifier (torchvision:<arch>[/<WEIGHTS>]), any open_clip model (open_clip:<arch>/<tag>) "
            "and any timm model (timm:<model>[.<tag>], e.g. timm:convnext_small.in12k_ft_in1k; names from "
            "timm.list_models()) also work;\n--weights FILE loads local weights when offline; "
            "`embed encoders --layers ID` lists the layers `build --layer` takes.")
