"""`embed export` / `embed import`: vectors out to, and in from, the embedding-reader layout."""

from __future__ import annotations

from pathlib import Path

import typer

from .common import emit_json, quiet_option, run_guarded, say

EXPORT_EPILOG = (
    "Examples:\n\n"
    "  embed export photos.h5 --format npy --out photos-export/\n\n"
    "  embed export photos.h5 --format parquet --out photos-parquet/ --json\n\n"
    "npy: emb/part-NNNNN.npy + metadata/part-NNNNN.parquet (id, label, split, uri, sha256; text and meta when items have them), row-aligned, as embedding-reader "
    "(file_format=\"parquet_npy\") and autofaiss read; parquet: emb/part-NNNNN.parquet with an embedding column."
)
IMPORT_EPILOG = (
    "Examples:\n\n"
    "  embed import photos-export/ --store copy.h5\n\n"
    "  embed import clip-output/ --store laion.h5 --name clip-vit-b32 --json\n\n"
    "Reads emb/ (or img_emb/, text_emb/) *.npy with metadata/*.parquet, or emb/*.parquet with an embedding column. "
    "The vector set is marked external: search it by --id or --vector-file; fit heads and detectors on it."
)


def register(app: typer.Typer) -> None:
    @app.command(epilog=EXPORT_EPILOG)
    def export(
        store: Path = typer.Argument(..., metavar="STORE", help="A store built by `embed build`."),
        out: Path = typer.Option(..., "--out", help="A new folder to write."),
        fmt: str = typer.Option("npy", "--format", help="npy (emb/*.npy + metadata/*.parquet) | parquet (embedding column)."),
        vector_set: str = typer.Option(None, "--set", help="Vector set name or encoder id, when the store has several."),
        dtype: str = typer.Option(None, "--dtype", help="float16 | float32 (default: as stored)."),
        part_rows: int = typer.Option(65536, "--part-rows", help="Rows per file."),
        json_out: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
        quiet: bool = quiet_option(),
    ) -> None:
        """Write a vector set's vectors and metadata for numpy, Parquet, embedding-reader and autofaiss."""
        from embedstore.exchange.export import export as run

        r = run_guarded(run, store, out, fmt=fmt, vector_set=vector_set, part_rows=part_rows, dtype=dtype, progress=not (json_out or quiet))
        if json_out:
            emit_json(r.to_dict())
            return
        say(f"exported {r.rows} x {r.dim} {r.dtype} vectors of {r.vector_set} to {r.out} as {r.format} in {r.parts} part(s) "
            f"({r.bytes / 2**20:.1f} MiB, {r.seconds:.1f} s)")

    @app.command("import", epilog=IMPORT_EPILOG)
    def import_(
        source: Path = typer.Argument(..., metavar="SOURCE", help="A folder from `embed export`, clip-retrieval or another embedder."),
        store: Path = typer.Option(..., "--store", "-s", help="The store to create or add to."),
        name: str = typer.Option(None, "--name", help="What made the vectors (the set is named external:NAME)."),
        json_out: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
        quiet: bool = quiet_option(),
    ) -> None:
        """Turn exported vectors into a store (provenance: external), for heads, detectors and search."""
        from embedstore.exchange.importer import import_folder

        r = run_guarded(import_folder, source, store, name=name, progress=not (json_out or quiet))
        if json_out:
            emit_json(r.to_dict())
            return
        say(f"imported {r.rows} x {r.dim} vectors ({r.layout}) from {r.source} into {r.store} as {r.vector_set} "
            f"(normalize {r.normalize}, {r.seconds:.1f} s)")
        for note in r.notes:
            say(f"  note: {note}")
