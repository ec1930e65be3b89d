"""A build on a busy CPU (issue 22, "fast under load"): decode workers at the encoder's priority,
the cores split between decoding and the encoder's threads, and a summary that says when the
encoder waited on decode and what to change. Behaviour only: no timing assertions."""

import json
import os
import subprocess
import sys
import time

import pytest

from embedstore.ingest import loader, runner
from embedstore.ingest.loader import cpu_split
from embedstore.ingest.runner import BuildReport, decode_advice

from conftest import embed, write_image

pytestmark = pytest.mark.skipif(not hasattr(os, "sched_getscheduler"), reason="Linux scheduling calls")


def _record_then(tmp_path, sleep: float = 0.0):
    """A load_image that notes (pid, scheduling class, nice) of the process that runs it, then
    sleeps `sleep` seconds (a slow source), then loads the file as usual. Workers are forked, so a
    patch made here is what they run."""
    real = loader.load_image
    log = tmp_path / "workers.log"

    def load_image(*a, **kw):
        with open(log, "a") as f:
            f.write(f"{os.getpid()} {os.sched_getscheduler(0)} {os.getpriority(os.PRIO_PROCESS, 0)}\n")
        if sleep:
            time.sleep(sleep)
        return real(*a, **kw)

    return load_image, log


def test_decode_workers_run_at_the_encoders_priority_not_idle(image_folder, tmp_path, build_tiny, monkeypatch):
    load_image, log = _record_then(tmp_path)
    monkeypatch.setattr(loader, "load_image", load_image)
    r = build_tiny(image_folder, tmp_path / "s.h5", workers=2, batch_size=2, device="cpu")
    assert r.encoded == 12
    rows = [tuple(map(int, ln.split())) for ln in log.read_text().splitlines()]
    assert len(rows) == 12
    assert os.getpid() not in {pid for pid, _, _ in rows}  # read in worker processes, not here
    assert {policy for _, policy, _ in rows} == {os.SCHED_OTHER}  # not SCHED_IDLE / SCHED_BATCH
    assert {nice for _, _, nice in rows} == {os.getpriority(os.PRIO_PROCESS, 0)}  # not nice 19


def test_cpu_cores_are_split_between_decode_workers_and_encoder_threads():
    assert cpu_split(2, None) == (1, 1)  # this machine: one worker, one encoder thread
    assert cpu_split(1, None) == (1, 1)
    assert cpu_split(8, None) == (2, 6)
    assert cpu_split(2, 4) == (4, 1)  # asked-for workers are kept; the encoder keeps one thread
    assert cpu_split(4, 0) == (0, 4)
    # an accelerated forward takes one thread more, sharing a core with the (mostly idle) decode workers
    assert cpu_split(2, None, accelerated=True) == (1, 2)
    assert cpu_split(8, None, accelerated=True) == (2, 7)
    assert cpu_split(1, None, accelerated=True) == (1, 1)
    assert cpu_split(4, 0, accelerated=True) == (0, 4)


def test_the_encoder_runs_with_the_threads_the_workers_leave_and_they_are_restored(image_folder, tmp_path, build_tiny,
                                                                                    monkeypatch):
    import torch

    from embedstore.embedding.service import EmbeddingService

    seen = []
    real = EmbeddingService.forward

    def forward(self, x):
        seen.append(torch.get_num_threads())
        return real(self, x)

    monkeypatch.setattr(EmbeddingService, "forward", forward)
    before = torch.get_num_threads()
    for accel, precision in (("none", "fp32"), ("auto", "fp32"), ("auto", "bf16")):
        seen.clear()
        r = build_tiny(image_folder, tmp_path / f"s-{accel}-{precision}.h5", workers=None, batch_size=None, device="cpu",
                       accel=accel, precision=precision)
        workers, threads = cpu_split(os.cpu_count() or 1, None, accelerated=r.accel == "openvino")
        assert (r.workers, r.encoder_threads) == (workers, threads), (accel, precision, r.accel)
        assert set(seen) == {threads}
        assert torch.get_num_threads() == before
        assert r.batch_size == loader.CPU_BATCH_SIZE  # the measured CPU default, not the GPU's 64


def test_extending_a_bf16_set_runs_eager_with_the_eager_threads(image_folder, tmp_path, build_tiny):
    """`auto` expects the accelerated forward (and its extra thread) until the set turns out to be
    built at bf16: then the build runs eager, with eager's threads, set before anything compiled."""
    build_tiny(image_folder, tmp_path / "s.h5", precision="bf16", workers=None, batch_size=None, device="cpu")
    write_image(image_folder / "cat" / "cat_new.png", seed=77)
    r = build_tiny(image_folder, tmp_path / "s.h5", precision="auto", workers=None, batch_size=None, device="cpu")
    assert r.encoded == 1 and r.precision == "bf16" and r.accel == "none"
    assert (r.workers, r.encoder_threads) == cpu_split(os.cpu_count() or 1, None)


def test_slow_decode_is_said_with_the_workers_to_add(image_folder, tmp_path, build_tiny, monkeypatch):
    load_image, _ = _record_then(tmp_path, sleep=0.25)  # 12 items: at least 3 s of decoding in one worker
    monkeypatch.setattr(loader, "load_image", load_image)
    r = build_tiny(image_folder, tmp_path / "s.h5", workers=1, batch_size=2, device="cpu")
    assert r.decode_wait_share >= runner.WAIT_SHARE_ADVICE and r.read_s >= runner.WAIT_SECONDS_ADVICE
    (advice,) = r.advice
    assert "waited on decode" in advice and "1 decode worker(s)" in advice
    if (os.cpu_count() or 1) > 1:
        assert "--workers 2" in advice
    else:
        assert "every core" in advice


def test_a_wait_that_is_the_first_batch_suggests_a_smaller_batch(image_folder, tmp_path, build_tiny, monkeypatch):
    load_image, _ = _record_then(tmp_path, sleep=0.15)
    monkeypatch.setattr(loader, "load_image", load_image)
    r = build_tiny(image_folder, tmp_path / "s.h5", workers=1, batch_size=12, device="cpu")  # one batch: all of it
    (advice,) = r.advice
    assert "before the first batch of 12" in advice and "--batch-size 3" in advice


def test_a_build_the_encoder_limits_says_nothing_about_decode(image_folder, tmp_path, build_tiny, monkeypatch):
    from embedstore.embedding.service import EmbeddingService

    real = EmbeddingService.forward

    def slow_forward(self, x):
        time.sleep(0.3)
        return real(self, x)

    monkeypatch.setattr(EmbeddingService, "forward", slow_forward)
    r = build_tiny(image_folder, tmp_path / "s.h5", workers=0, batch_size=2, device="cpu")
    assert r.encoded == 12 and r.encode_s >= 1.8
    assert r.advice == [] and r.decode_wait_share < runner.WAIT_SHARE_ADVICE


@pytest.mark.parametrize("workers, cores, expected", [
    (0, 2, "add --workers 1"),
    (1, 2, "--workers 2"),
    (2, 16, "--workers 8"),  # the encoder was busy a quarter of the loop: four times the decoding
    (2, 2, "the workers already have every core"),
])
def test_the_advice_names_what_to_change(workers, cores, expected):
    r = BuildReport(store="s", source="d", encoder="e", vector_set="v", device="cpu", precision="fp32",
                    precision_reason="", dtype="float16", batch_size=8, workers=workers)
    r.loop_s, r.read_s, r.encode_s, r.first_batch_wait_s = 20.0, 15.0, 5.0, 0.5
    r.decode_wait_share = r.read_s / r.loop_s
    (advice,) = decode_advice(r, cores)
    assert expected in advice and "75% of the loop" in advice
    r.read_s, r.decode_wait_share = 0.5, 0.5  # half of a short loop: not worth a word
    assert decode_advice(r, cores) == []
    r.read_s, r.decode_wait_share = 4.0, 0.2  # a fifth of a long one: neither
    assert decode_advice(r, cores) == []


def test_the_cli_summary_and_json_say_when_the_encoder_waited_on_decode(image_folder, tmp_path, monkeypatch):
    tiny = ["--encoder", "test:tiny", "--precision", "fp32", "--device", "cpu", "-q", "--batch-size", "2", "--workers", "1"]
    quiet = embed("build", image_folder, "--store", tmp_path / "a.h5", *tiny)
    assert quiet.exit_code == 0, quiet.output
    assert "1 decode worker(s), " in quiet.output and "idle priority" not in quiet.output
    load_image, _ = _record_then(tmp_path, sleep=0.25)
    monkeypatch.setattr(loader, "load_image", load_image)
    slow = embed("build", image_folder, "--store", tmp_path / "b.h5", *tiny)
    assert slow.exit_code == 0, slow.output
    assert "slow decode: the encoder waited on decode for" in slow.output
    j = embed("build", image_folder, "--store", tmp_path / "c.h5", *tiny, "--json")
    doc = json.loads(j.output)
    assert doc["decode_wait_share"] >= runner.WAIT_SHARE_ADVICE and "waited on decode" in doc["advice"][0]
    assert doc["workers"] == 1 and doc["encoder_threads"] >= 1


def test_a_process_that_built_with_an_accelerated_forward_can_still_fork(image_folder, tmp_path):
    """The build sets the encoder's threads before the encoder is built: an OpenVINO forward compiled
    for two threads and recompiled for one left this process to crash at its next fork."""
    pytest.importorskip("openvino")
    code = ("import subprocess, sys\nfrom embedstore.ingest import build\n"
            f"r = build({str(image_folder)!r}, {str(tmp_path / 's.h5')!r}, encoder='test:tiny', precision='fp32', "
            "device='cpu', accel='openvino', workers=1, progress=False)\n"
            "print(r.accel, r.encoder_threads, subprocess.run([sys.executable, '-c', 'print(7)'], capture_output=True, "
            "text=True).stdout.strip())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-3:] == ["openvino", str(cpu_split(os.cpu_count() or 1, 1, accelerated=True)[1]), "7"]


@pytest.mark.parametrize("workers, cores, waited, loop, batches, expected", [
    (1, 2, 6.4, 10.0, 20, 2),  # waited 64% of the loop: decoding must go 2.8x as fast, one worker a core
    (2, 16, 7.5, 10.0, 20, 8),  # the encoder busy a quarter of the loop: four times the workers
    (1, 2, 2.0, 10.0, 20, None),  # a fifth: the encoder is what limits the build
    (2, 2, 9.0, 10.0, 20, None),  # one worker a core already
    (1, 2, 0.9, 0.95, 20, None),  # under a second: not yet a steady state
    (1, 2, 5.0, 10.0, 3, None),  # three batches: not yet a steady state
])
def test_the_workers_are_raised_when_the_encoder_waits_on_them(workers, cores, waited, loop, batches, expected):
    assert loader.more_workers(workers, cores, waited, loop, batches) == expected


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one worker is all a single core gets")
def test_a_build_that_waits_on_decode_raises_its_workers_and_loses_nothing(tmp_path, build_tiny, monkeypatch):
    """Workers not asked for: the build starts with the measured split (one worker on two cores),
    sees the encoder waiting, reopens the loader with a worker a core at the first item not yet
    read, and says so; every item is embedded once, as a build with no workers embeds it."""
    from conftest import make_image_folder
    from embedstore.store import open_store

    src = make_image_folder(tmp_path / "photos", per_class=14)
    load_image, log = _record_then(tmp_path, sleep=0.1)
    monkeypatch.setattr(loader, "load_image", load_image)
    r = build_tiny(src, tmp_path / "s.h5", workers=None, batch_size=2, device="cpu", accel="none")
    assert r.encoded == 28 and r.workers == 2
    (note,) = [n for n in r.notes if "decode workers raised" in n]
    assert "from 1 to 2 after" in note and "--workers N" in note
    assert not any("add decode workers" in a for a in r.advice)  # advice reads the loop since the raise
    monkeypatch.undo()
    ref = build_tiny(src, tmp_path / "ref.h5", workers=0, batch_size=2, device="cpu", accel="none")
    assert ref.workers == 0 and not any("raised" in n for n in ref.notes)  # workers asked for are kept
    got = {}
    for name in ("s", "ref"):
        with open_store(tmp_path / f"{name}.h5") as st:
            ids, X = zip(*[(i, v) for ids, V in st.iter_vectors(st.select_set().name) for i, v in zip(ids, V)])
            assert len(set(ids)) == len(ids) == 28
            got[name] = dict(zip(ids, X))
    assert all((got["s"][k] == got["ref"][k]).all() for k in got["ref"])


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one worker is all a single core gets")
def test_no_workers_are_raised_for_the_last_batches(image_folder, tmp_path, build_tiny, monkeypatch):
    """A window that fills only as the source ends raises nothing (it once forked a new pool for no
    items and reported two workers for a build that ran on one), and the advice still speaks."""
    load_image, _ = _record_then(tmp_path, sleep=0.1)
    monkeypatch.setattr(loader, "load_image", load_image)
    monkeypatch.setattr(loader, "ADAPT_BATCHES", 5)  # 12 items in batches of 2: the window fills at the last
    monkeypatch.setattr(loader, "ADAPT_SECONDS", 0.0)
    r = build_tiny(image_folder, tmp_path / "s.h5", workers=None, batch_size=2, device="cpu", accel="none")
    assert r.encoded == 12 and r.workers == 1 and not any("raised" in n for n in r.notes)
    (advice,) = r.advice
    assert "add decode workers: --workers 2" in advice


def test_a_rebuild_with_nothing_to_do_does_not_load_the_accelerated_forward(image_folder, tmp_path, build_tiny,
                                                                            monkeypatch):
    """Loading (or converting) the accelerated forward is part of a build's fixed cost: a rebuild of
    an unchanged source skips it; one with a new file loads it and records it on the set as before."""
    from embedstore.embedding.service import EmbeddingService
    from embedstore.store import open_store

    first = build_tiny(image_folder, tmp_path / "s.h5", precision="fp32", accel="auto", device="cpu")
    assert first.encoded == 12 and first.accel == "openvino"
    calls = []
    real = EmbeddingService.prepare_accel
    monkeypatch.setattr(EmbeddingService, "prepare_accel", lambda self: calls.append(1) or real(self))
    again = build_tiny(image_folder, tmp_path / "s.h5", precision="fp32", accel="auto", device="cpu")
    assert (again.encoded, again.unchanged, calls) == (0, 12, [])
    assert not any("encoder forward" in n for n in again.notes)  # no forward ran: nothing said of one
    write_image(image_folder / "cat" / "cat_new.png", seed=78)
    more = build_tiny(image_folder, tmp_path / "s.h5", precision="fp32", accel="auto", device="cpu")
    assert more.encoded == 1 and calls and more.accel == "openvino"
    assert any("encoder forward: openvino" in n for n in more.notes)
    with open_store(tmp_path / "s.h5") as st:
        assert st.select_set().attrs["build_accel"] == "openvino"
