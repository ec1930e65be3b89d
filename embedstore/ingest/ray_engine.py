"""The Ray engine: the same build, spread over a Ray cluster with Ray Data.

plan (driver) -> read + hash + decode + preprocess (CPU tasks) -> encode (an actor pool: one actor
per GPU, or CPU actors) -> write shards (parallel tasks, straight into the store's shard folder, in
the format the local build writes) -> catalog and index (driver; IVF lists filled shard by shard in
parallel tasks and merged). The driver holds the store's writer lock throughout.

Shard names are the run's start time plus the first plan position in the shard, so names sort in
plan order and a retried write task (its worker killed) replaces its shard instead of adding a copy;
should a copy land anyway, the catalog keeps the newest row of each id, so every item is stored once.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import BuildError, EmbedstoreError
from .ray_stages import FAULT_ENV, EmbedActor, decode_batch, write_batch


def connect(address: str | None) -> "Cluster":
    """Join the Ray instance already running in this process, or start/connect one."""
    try:
        import ray
    except ImportError:
        raise BuildError("--engine ray needs Ray, which is not installed; install it with "
                         "pip install 'embedstore[ray]' (on every node of the cluster)") from None
    started = False
    _check_reachable(address)
    if not ray.is_initialized():
        os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")  # Ray Data's actor-restart notice is not the user's concern
        kwargs = dict(include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
        try:
            with _quiet_stderr():  # Ray's C++ start-up notes; errors still arrive as exceptions
                ray.init(address=address, **kwargs)
        except Exception as e:  # noqa: BLE001 - ConnectionError, RuntimeError, ValueError by address kind
            msg = (str(e).strip().splitlines() or [type(e).__name__])[0][:200].rstrip(".")
            raise BuildError(f"cannot connect to a Ray cluster at {address}: {msg}; start one with `ray start --head` "
                             "on the head node (see the README), or leave out --address to run on a local Ray instance") from None
        started = True
    res = ray.cluster_resources()
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    return Cluster(address or "local", started, float(res.get("CPU", 0)), float(res.get("GPU", 0)), nodes)


@contextlib.contextmanager
def _quiet_stderr():
    import tempfile

    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def _check_reachable(address: str | None, timeout: float = 5.0) -> None:
    """Fail in seconds on a host:port nobody answers (Ray itself waits for minutes)."""
    if not address or address == "auto":
        return
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise BuildError(f"--address must be auto, host:port or ray://host:port, not '{address}'")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as e:
        raise BuildError(f"cannot reach the Ray cluster at {address} ({e.strerror or e}); check the address and that "
                         "`ray start --head` is running there, or leave out --address to run on a local Ray instance") from None


@dataclass
class Cluster:
    address: str
    started: bool
    cpus: float
    gpus: float
    nodes: list
    device: str = "cpu"
    precision: str = "auto"
    actors: int = 1
    threads: int = 1

    @property
    def decode_slots(self) -> int:
        return max(1, int(self.cpus) - (self.actors if self.device == "cpu" else 0))

    def plan(self, device: str, precision: str, actors: int | None):
        """Size the encoder pool to the cluster: one actor per GPU, or CPU actors sharing the cores."""
        import torch

        from ..embedding.device import resolve_precision

        if device not in ("auto", "cpu", "cuda"):
            raise BuildError(f"--device must be auto, cpu or cuda with --engine ray, not '{device}'")
        if actors is not None and actors < 1:
            raise BuildError(f"--actors must be 1 or more, not {actors}")
        if self.cpus < 2:
            raise BuildError(f"the Ray cluster has {self.cpus:g} CPU(s); --engine ray needs at least 2 (decode tasks and an "
                             "encoder run side by side); add CPUs or use the local engine")
        if device == "cuda" and self.gpus < 1:
            raise BuildError("--device cuda was asked for but the Ray cluster has no GPUs; use --device cpu or auto")
        self.device = "cuda" if device != "cpu" and self.gpus >= 1 else "cpu"
        if precision != "auto":  # the local build's checks; "auto" is resolved on each actor's own device
            resolve_precision(precision, torch.device(self.device))
        most = int(self.gpus) if self.device == "cuda" else max(1, int(self.cpus) - 1)
        if actors is not None and actors > most:
            what = f"{int(self.gpus)} GPU(s)" if self.device == "cuda" else f"{int(self.cpus)} CPUs (one is kept for decoding)"
            raise BuildError(f"--actors {actors} is more than the Ray cluster can hold: it has {what}; use --actors {most} or fewer")
        self.actors = actors or (most if self.device == "cuda" else max(1, int(self.cpus) // 8))
        node_cpus = max((n.get("Resources", {}).get("CPU", 1) for n in self.nodes), default=1)
        self.threads = max(1, int(min(node_cpus, self.cpus // self.actors)))
        self.precision = precision
        reason = "asked for" if precision != "auto" else "auto: chosen on each actor's device"
        return torch.device(self.device), precision, reason

    def describe(self) -> dict:
        return {"address": self.address, "nodes": len(self.nodes), "cpus": self.cpus, "gpus": self.gpus,
                "actors": self.actors, "actor_device": self.device, "threads_per_actor": self.threads if self.device == "cpu" else None}

    def close(self) -> None:
        import ray

        if self.started:
            ray.shutdown()

    # ---- the build ------------------------------------------------------------------------
    def run(self, st, todo, svc, weights: str | None, set_attrs: dict, batch_size: int, shard_rows: int, report,
            progress: bool) -> None:
        """Embed `todo` into shards of the vector set `svc` makes; fills in `report`. The driver
        writes no rows; each actor rebuilds the same embedding service from its provenance. Files
        with a gone item's bytes (plan.Plan.reuse) are encoded again here, not copied as the local
        engine copies them: the vectors agree, but a write task would have to read the set's shards."""
        import ray
        import ray.data

        from ..progress import progress_bar
        from .notes import merge_image_notes

        if not todo:
            return
        set_name, dtype = svc.set_name, svc.dtype
        shard_dir = st.shard_root / set_name
        shard_dir.mkdir(parents=True, exist_ok=True)
        self._check_nodes(shard_dir, todo[0].item.uri if todo[0].item.text is None else None)
        logging.getLogger("ray.data").setLevel(logging.ERROR)  # our bar and summary say what Ray Data would
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.print_on_execution_start = False
        texts = svc.modality == "text"
        fault = os.environ.get(FAULT_ENV, "")
        ds = _plan_dataset(todo, block_rows=max(batch_size, min(1024, -(-len(todo) // (4 * self.decode_slots)))))
        # decode tasks reserve the memory of a decoded batch; that also keeps Ray Data from fusing
        # them into the encoder actors, which would decode and encode in turn on one process
        side = 0 if texts else svc.cfg.preprocess.input_size  # uint8 pixels
        ds = ds.map_batches(decode_batch, fn_kwargs=dict(preprocess=None if texts else svc.cfg.preprocess),
                            batch_size=batch_size, batch_format="numpy", num_cpus=1,
                            memory=2 * batch_size * (3 * side * side + 4096))
        ds = ds.map_batches(EmbedActor, fn_constructor_kwargs=dict(
            provenance=svc.provenance, weights=weights, device=self.device, precision=self.precision, threads=self.threads,
            fault=fault),
            batch_size=batch_size, batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=self.actors),
            num_gpus=1 if self.device == "cuda" else 0, num_cpus=1 if self.cpus >= 2 * self.actors else 0)
        ds = ds.map_batches(write_batch, fn_kwargs=dict(shard_dir=str(shard_dir), set_name=set_name, set_attrs=set_attrs,
                                                        dtype=dtype, stamp=time.time_ns(), fault=fault),
                            batch_size=shard_rows, batch_format="numpy", num_cpus=1)
        bar = progress_bar(len(todo), desc=f"embed {svc.cfg.id} on Ray", enabled=progress)
        precisions = set()
        try:
            for out in ds.iter_rows():
                report.encoded += int(out["encoded"])
                report.unchanged += int(out["unchanged"])
                report.metadata_updated += int(out["metadata_updated"])
                q = json.loads(out["quarantined"])
                report.quarantined += len(q)
                report.quarantined_items.extend(q)
                report.truncated += int(out["truncated"])
                merge_image_notes(report.image_notes, json.loads(out["image_notes"]))
                report.read_s += float(out["read_s"])
                report.encode_s += float(out["encode_s"])
                report.write_s += float(out["write_s"])
                report.shards_written += 1
                precisions.add(str(out["precision"]))
                bar.update(int(out["rows"]))
                bar.set_postfix(quarantined=report.quarantined, refresh=False)
        except KeyboardInterrupt:
            report.interrupted = True  # shards already renamed into place stay committed
        except Exception as e:  # noqa: BLE001 - a worker's error arrives wrapped by Ray
            raise _unwrap(e) from None
        finally:
            bar.close()
        if precisions - {""}:
            report.precision = ",".join(sorted(precisions - {""}))

    def _check_nodes(self, shard_dir: Path, first_uri: str | None) -> None:
        """Every node must see the store (and the data) at the same path: shards are written there."""
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        probe = ray.remote(num_cpus=0)(_probe)
        refs = [probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(
            str(shard_dir), first_uri) for n in self.nodes]
        for problem in ray.get(refs, timeout=300):
            if problem:
                raise BuildError(problem)

    def index_adder(self):
        from .ray_index import ParallelAdd

        return ParallelAdd(max(1, int(self.cpus)))


def _probe(shard_dir: str, uri: str | None) -> str | None:
    host = socket.gethostname()
    if not os.path.isdir(shard_dir) or not os.access(shard_dir, os.W_OK):
        return (f"Ray node {host} cannot write the store's shard folder {shard_dir}; put the store on storage "
                "that every node mounts at the same path (NFS, a shared volume)")
    if uri is not None and "://" not in uri and not os.path.exists(uri):
        return f"Ray node {host} cannot see {uri}; the source files must be at the same path on every node"
    return None


def _unwrap(e: BaseException) -> BaseException:
    """The embedstore error a worker raised (one line for the user), or a BuildError naming Ray's."""
    seen = e
    while seen is not None:
        if isinstance(seen, EmbedstoreError):
            return seen
        cause = getattr(seen, "cause", None)
        seen = cause if isinstance(cause, BaseException) else seen.__cause__
    msg = (str(e).strip().splitlines() or [type(e).__name__])[-1][:300]
    return BuildError(f"the Ray build failed: {msg}; shards written so far are kept, re-run the same command to resume")


def _plan_dataset(todo, block_rows: int):
    import pyarrow as pa
    import ray.data

    cols = {
        "k": np.arange(len(todo), dtype=np.int64),
        "id": [t.item.id for t in todo], "uri": [t.item.uri for t in todo],
        "label": [t.item.label or "" for t in todo], "split": [t.item.split or "" for t in todo],
        "text": [t.item.text or "" for t in todo], "has_text": [t.item.text is not None for t in todo],
        "problem": [t.item.problem or "" for t in todo], "meta": [t.item.meta or "" for t in todo],
        "size": [t.size for t in todo], "mtime_ns": [t.mtime_ns for t in todo], "known": [t.known_sha or "" for t in todo],
        "relabelled": [t.relabelled for t in todo],
    }
    table = pa.table(cols)
    return ray.data.from_arrow([table.slice(s, block_rows) for s in range(0, len(todo), block_rows)])
