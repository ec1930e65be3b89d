"""The `embed` CLI through typer's CliRunner, including its error paths."""

import json
import os
from pathlib import Path
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from embedstore.cli.main import app

from conftest import add_bad_files

runner = CliRunner()
TINY = ["--encoder", "test:tiny", "--precision", "fp32", "--workers", "0", "--quiet"]


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_build_info_json_roundtrip(image_folder, tmp_path):
    store = tmp_path / "s.h5"
    add_bad_files(image_folder)
    r = run("build", image_folder, "--store", store, *TINY)
    assert r.exit_code == 0, r.output
    assert "12 new vectors" in r.output and "quarantined cat/truncated.jpg" in r.output
    assert "time: read" in r.output and "items/s" in r.output
    j = run("build", image_folder, "--store", store, *TINY, "--json")
    report = json.loads(j.stdout)
    assert report["encoded"] == 0 and report["unchanged"] == 12 and report["previously_quarantined"] == 4
    info = json.loads(run("info", store, "--json").stdout)
    assert info["ok"] == 12 and info["quarantined"] == 4
    text = run("info", store).output
    assert "labels: cat 6, dog 6" in text and "IndexFlatIP" in text and "up to date" in text


def test_encoders_lists_offline_status():
    r = run("encoders")
    assert r.exit_code == 0
    line = next(ln for ln in r.output.splitlines() if ln.startswith("effnet-lite:lite0"))
    assert "1280" in line and " yes " in line
    rows = json.loads(run("encoders", "test:t*", "--json").stdout)
    assert rows == [{"id": "test:tiny", "dim": 32, "input_size": 32, "layer": "penultimate", "pooling": "avg",
                     "weights": "random, seeded (for tests)", "available": "bundled"}]
    assert [r["id"] for r in json.loads(run("encoders", "test:*", "--json").stdout)] == ["test:tiny", "test:hash-text"]
    assert "2" in run("encoders", "--layers", "test:tiny").output.split()


@pytest.mark.parametrize(
    "args, message",
    [
        (["build", "{tmp}/missing", "--store", "{tmp}/s.h5"], "does not exist"),
        (["build", "{src}", "--store", "{tmp}/s.h5", "--encoder", "torchvison:resnet50"], "did you mean 'torchvision:resnet50'"),
        (["build", "{src}", "--store", "{tmp}/s.h5", "--encoder", "test:tiny", "--layer", "nope"], "has no layer 'nope'"),
        (["build", "{src}", "--store", "{tmp}/notes.txt", "--encoder", "test:tiny"], "not an HDF5 file"),
        (["build", "{src}", "--store", "{tmp}/s.h5", "--encoder", "test:tiny", "--dtype", "int8"], "--dtype must be"),
        (["build", "{src}", "--store", "{tmp}/s.h5", "--encoder", "test:tiny", "--device", "cuda"], "no CUDA GPU"),
        (["build", "{src}", "--store", "{tmp}/s.h5", "--encoder", "test:tiny", "--precision", "fp8"], "--precision must be"),
        (["build", "{src}", "--store", "{tmp}/s.h5", "--encoder", "torchvision:resnet18"], "cannot be reached"),
        (["info", "{tmp}/nothing.h5"], "does not exist"),
        (["encoders", "--layers", "nope:x"], "unknown encoder source"),
    ],
)
def test_errors_are_one_line_and_non_zero(image_folder, tmp_path, monkeypatch, args, message):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "no-cache"))
    (tmp_path / "notes.txt").write_text("keep me")
    r = run(*[a.format(tmp=tmp_path, src=image_folder) for a in args])
    assert r.exit_code == 2
    err = r.stderr.strip()
    assert err.startswith("error: ") and message in err and len(err.splitlines()) == 1
    assert (tmp_path / "notes.txt").read_text() == "keep me"


@pytest.mark.parametrize(
    "args, message",
    [
        (["build", "{src}"], "missing option '--store' / '-s' (`embed build --help` lists"),
        (["build", "{src}", "--store", "x.h5", "--batch-size", "0"], "invalid value for '--batch-size'"),
        (["fit-head"], "missing argument 'HEAD' (`embed fit-head --help` lists"),
        (["search", "x.h5", "-k", "abc"], "invalid value for '-k'"),
        (["fit-head", "logistic", "--stor", "x.h5"], "no such option: --stor"),
        (["nosuch"], "no such command 'nosuch' (`embed --help` lists"),
        (["--bogus"], "no such option: --bogus"),
    ],
)
def test_usage_errors_are_one_line_and_name_the_help(image_folder, args, message):
    """Click's four-line usage errors (Usage:, Try ..., Error: ...) come out as one `error:` line like
    every other error, naming the parameter and where its options are listed."""
    r = run(*[a.format(src=image_folder) for a in args])
    assert r.exit_code == 2
    err = r.stderr.strip()
    assert err.startswith("error: ") and message in err and len(err.splitlines()) == 1, err


def test_errors_with_json_are_json_on_stdout_too(tmp_path):
    """A script that asked for --json reads an object on stdout when the command fails, beside the
    one-line error on stderr and the non-zero exit."""
    for args in (["info", tmp_path / "nope.h5", "--json"], ["search", tmp_path / "nope.h5", "--id", "x", "--json"],
                 ["fit-head", "logistic", "--store", tmp_path / "nope.h5", "--json"]):
        r = run(*args)
        assert r.exit_code == 2 and r.stderr.startswith("error: ")
        doc = json.loads(r.stdout)
        assert doc["exit_code"] == 2 and "does not exist" in doc["error"] and doc["error"] in r.stderr
    r = run("info", tmp_path / "nope.h5")  # without --json: stderr only
    assert r.exit_code == 2 and r.stdout == ""
    # a usage error (an unknown option) comes before any parameter is parsed: JSON all the same
    r = run("fit-head", "logistic", "--store", tmp_path / "nope.h5", "--bogus", "--json")
    doc = json.loads(r.stdout)
    assert r.exit_code == 2 and doc["exit_code"] == 2 and doc["error"].startswith("no such option: --bogus")
    r = run("fit-head", "logistic", "--store", tmp_path / "nope.h5", "--bogus")
    assert r.exit_code == 2 and r.stdout == ""


def test_no_arguments_still_print_the_help():
    r = run()
    assert "Usage: embed" in r.output and "build" in r.output and "error:" not in r.output


def test_help_has_examples_and_loads_no_heavy_library():
    code = ("import sys; from typer.testing import CliRunner; from embedstore.cli.main import app; "
            "r = CliRunner().invoke(app, ['build', '--help']); "
            "print(r.exit_code, 'Examples' in r.output, sorted(m for m in ('torch', 'h5py', 'faiss', 'numpy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["0", "True", "[]"]


@pytest.mark.slow
def test_demo_runs_offline_on_bundled_data(tmp_path):
    r = run("demo", "--out", tmp_path / "demo", "--per-class", "4", "--quiet")
    assert r.exit_code == 0, r.output
    assert "40 new vectors" in r.output and "effnet-lite:lite0" in r.output
    assert "test (never seen by the head): accuracy" in r.output and "95% CI" in r.output and "AUROC" in r.output and "search by id" in r.output
    page = tmp_path / "demo" / "report" / "index.html"
    text = page.read_text()
    for section in ("Build:", "Embedding map", "Classifier head: logistic", "Anomalies: knn", "Nearest-neighbour search"):
        assert section in text
    assert text.count("data:image/png;base64,") >= 10  # plots and thumbnails inlined: the page stands alone
    assert (tmp_path / "demo" / "heads" / "digits-logistic" / "head.json").is_file()
    again = run("demo", "--out", tmp_path / "demo", "--per-class", "4", "--quiet", "--json")
    doc = json.loads(again.stdout)
    assert doc["build"]["encoded"] == 0 and doc["report"].endswith("index.html")


def test_ls_lists_item_ids_filtered(tmp_path):
    from conftest import add_bad_files, make_image_folder

    src = make_image_folder(tmp_path / "photos", per_class=3)
    add_bad_files(src)
    (src / "dog" / "dog_002.jpg").rename(src / "dog" / "two\nlines.jpg")  # a legal POSIX name
    r = run("build", src, "--store", tmp_path / "s.h5", "--encoder", "test:tiny", "--precision", "fp32", "-q")
    assert r.exit_code == 0, r.output
    r = run("ls", tmp_path / "s.h5", "--where", "label=dog")  # one line an item: the newline is escaped
    assert r.exit_code == 0 and r.output.splitlines() == ["dog/dog_000.jpg", "dog/dog_001.png", "dog/two\\nlines.jpg"]
    assert "dog/two\nlines.jpg" in {i["id"] for i in json.loads(run("ls", tmp_path / "s.h5", "--json").stdout)}
    # what ls prints reads back as the ids: an exclusion list, and search by the id as printed
    (tmp_path / "dogs.txt").write_text(r.output)
    from embedstore.sources.exclusions import read_exclusions

    assert read_exclusions(tmp_path / "dogs.txt").ids == {"dog/dog_000.jpg", "dog/dog_001.png", "dog/two\nlines.jpg"}
    too_many = run("search", tmp_path / "s.h5", "--id", "dog/two\\nlines.jpg", "-k", 6)  # 6 items, the query left out
    assert too_many.exit_code == 2 and "use -k 5 or less" in too_many.output, too_many.output
    hits = run("search", tmp_path / "s.h5", "--id", "dog/two\\nlines.jpg", "-k", 5, "--json")
    assert hits.exit_code == 0 and len(json.loads(hits.stdout)["hits"]) == 5, hits.output
    mine = run("search", tmp_path / "s.h5", "--id", "dog/dog_000.jpg", "-k", 5).output  # the table: one line an item
    assert "dog/two\\nlines.jpg" in mine and "dog/two\nlines.jpg" not in mine
    longq = run("ls", tmp_path / "s.h5", "-l", "--status", "quarantined").stdout.splitlines()
    assert any(ln.startswith("cat/empty.jpg\t") and "\tquarantined (empty file" in ln for ln in longq), longq
    none = run("ls", tmp_path / "s.h5", "--where", "label=emu")  # an empty list, and why on stderr
    assert none.exit_code == 0 and none.stdout == "" and none.stderr.startswith("note: no item matches --where label=emu")
    q = json.loads(run("ls", tmp_path / "s.h5", "--status", "quarantined", "--json").stdout)
    assert {i["id"] for i in q} == {"cat/truncated.jpg", "cat/empty.jpg", "cat/notes.txt", "cat/corrupt.png"}
    # info counts ok items, ls every item: info says so (cat 3 in info, 7 lines from ls --where label=cat)
    info = run("info", tmp_path / "s.h5").output
    assert "labels: cat 3, dog 3 (of the 6 ok items; `embed ls --status quarantined` lists the others)" in info, info
    assert len(run("ls", tmp_path / "s.h5", "--where", "label=cat").stdout.splitlines()) == 7
    for args, msg in ((["--status", "bad"], "--status must be ok, quarantined or missing"), (["--where", "colour=red"], "unknown filter key")):
        r = run("ls", tmp_path / "s.h5", *args)
        assert r.exit_code == 2 and msg in r.output
    r = run("ls", tmp_path / "missing.h5")
    assert r.exit_code == 2 and "does not exist" in r.output


@pytest.mark.parametrize("args", [["fit-head", "logistc", "--store", "{tmp}/s.h5"], ["fit-head", "logistic", "--store", "{tmp}/s.h5"],
                                  ["anomalies", "--store", "{tmp}/s.h5", "--method", "knm"], ["search", "{tmp}/s.h5", "--id", "x"]])
def test_bad_arguments_fail_before_torch_or_scikit_learn_load(tmp_path, args):
    """A typo or a missing store is answered from the argument checks alone: neither torch nor
    scikit-learn is imported first (they take seconds to load on a small machine)."""
    code = ("import sys\nfrom typer.testing import CliRunner\nfrom embedstore.cli.main import app\n"
            f"r = CliRunner().invoke(app, {[a.format(tmp=tmp_path) for a in args]!r})\n"
            "print(r.exit_code, 'torch' in sys.modules, 'sklearn' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["2", "False", "False"]


def test_encoders_listing_imports_no_torch():
    """`embed encoders` answers from the registry's config tables: no model library is imported."""
    code = ("import sys\nfrom typer.testing import CliRunner\nfrom embedstore.cli.main import app\n"
            "r = CliRunner().invoke(app, ['encoders'])\n"
            "print(r.exit_code, 'effnet-lite:lite0' in r.output, 'torch' in sys.modules, 'open_clip' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["0", "True", "False", "False"]


@pytest.mark.parametrize("slow", ["0", "1"])
def test_the_quick_exit_joins_threads_runs_atexit_flushes_and_keeps_the_status(tmp_path, slow):
    """`embed` ends without the interpreter's module teardown (cli/main.quick_exit), having done what
    that shutdown does that matters: a worker thread still running is joined, atexit handlers run,
    all output reaches a pipe, and the status is the command's. EMBEDSTORE_SLOW_EXIT=1: the ordinary exit."""
    import os

    code = ("import atexit, sys, threading, time\n"
            f"marks = {str(tmp_path)!r}\n"
            "atexit.register(lambda: open(marks + '/atexit', 'w').write('ran'))\n"
            "threading.Thread(target=lambda: (time.sleep(0.5), open(marks + '/thread', 'w').write('ran'))).start()\n"
            "print('x' * 1_000_000)\n"
            "from embedstore.cli.main import main\n"
            "sys.argv = ['embed', 'ls', marks + '/missing.h5']\n"
            "main()\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "EMBEDSTORE_SLOW_EXIT": slow})
    assert out.returncode == 2 and "does not exist" in out.stderr and out.stderr.count("\n") == 1
    assert out.stdout == "x" * 1_000_000 + "\n"
    assert (tmp_path / "atexit").read_text() == "ran" and (tmp_path / "thread").read_text() == "ran"


def test_an_output_in_a_folder_that_cannot_be_written_is_one_line_for_every_command(image_folder, tmp_path):
    """/sys refuses new files even to root (EACCES, or EROFS where it is mounted read-only): every
    command that writes an output says so in one line with exit 2. They said 'unexpected OSError'
    (exit 1), and neighbors also printed a traceback from the atomic writer's cleanup, whose unlink
    of a name never made fails on a read-only disk."""
    s = tmp_path / "s.h5"
    assert run("build", image_folder, "--store", s, *TINY).exit_code == 0
    assert run("fit-head", "logistic", "--store", s, "--out", tmp_path / "h", "-q").exit_code == 0
    for args in (["neighbors", s, "--out", "/sys/n.csv"], ["export", s, "--out", "/sys/x"],
                 ["anomalies", "--store", s, "--out", "/sys/a.csv"], ["fit-head", "logistic", "--store", s, "--out", "/sys/h"],
                 ["audit", s, "--report", "/sys/rep"], ["predict", tmp_path / "h", image_folder, "--out", "/sys/p.csv"],
                 ["search", s, "--queries", image_folder / "cat", "--out", "/sys/q.csv"]):
        r = run(*args, "-q")  # in-process: an exception escaping the command would be r.exception, exit 1
        assert r.exit_code == 2, (args, r.stderr, r.exception)
        assert r.stderr.startswith("error: cannot write /sys/") and "Traceback" not in r.stderr, (args, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1, (args, r.stderr)


def test_ctrl_c_is_answered_by_what_each_command_keeps(tmp_path, monkeypatch):
    """Only the commands that resume say "re-run to resume": build (committed shards), finetune
    (--resume from its last epoch); the others say nothing is left half-written."""
    import embedstore.ingest
    import embedstore.search.query

    def interrupted(*a, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(embedstore.ingest, "build", interrupted)
    monkeypatch.setattr(embedstore.search.query, "search", interrupted)
    runner = CliRunner()
    (tmp_path / "photos" / "cat").mkdir(parents=True)
    r = runner.invoke(app, ["build", str(tmp_path / "photos"), "--store", str(tmp_path / "s.h5")])
    assert r.exit_code == 130 and "re-run the same command to resume" in r.output, r.output
    r = runner.invoke(app, ["search", str(tmp_path / "s.h5"), "--id", "x"])
    assert r.exit_code == 130 and "resume" not in r.output and "none is left half-written" in r.output, r.output


def test_an_output_folder_that_cannot_be_written_is_refused_before_any_work(image_folder, tmp_path, monkeypatch):
    """fit-head --out in a folder it cannot write (a read-only mount, no permission) fitted the whole
    head before the write failed. The --force rule's check (atomic.check_replace) now also asks
    whether the folder can be written, before any work. Root may write anywhere but a read-only
    mount, so the folder's refusal is simulated here."""
    import embedstore.atomic as atomic
    import embedstore.heads.fit as fit

    s = tmp_path / "s.h5"
    assert run("build", image_folder, "--store", s, *TINY).exit_code == 0
    locked = tmp_path / "locked"
    locked.mkdir()
    real = os.access
    monkeypatch.setattr(atomic.os, "access", lambda p, mode, **kw: False if Path(p) == locked else real(p, mode, **kw))

    def no_fit(*a, **kw):
        raise AssertionError("the head was fitted before the output was checked")

    monkeypatch.setattr(fit, "selection_plan", no_fit)
    for out in (locked / "h", locked / "new" / "h"):  # a folder to be made inside it too
        r = run("fit-head", "logistic", "--store", s, "--out", out, "-q")
        assert r.exit_code == 2, (r.stderr, r.exception)
        assert r.stderr.strip() == f"error: cannot write {out}: permission denied ({locked}); choose another --out", r.stderr
    (tmp_path / "afile").write_text("x")
    r = run("fit-head", "logistic", "--store", s, "--out", tmp_path / "afile" / "h", "-q")
    assert r.exit_code == 2 and f"{tmp_path / 'afile'} is a file, not a folder; choose another --out" in r.stderr, r.stderr


def test_every_option_of_every_command_says_what_it_does():
    """`finetune --epochs`, `--seed`, `--json` and others printed no description at all."""
    import typer

    from conftest import embed
    from embedstore.cli.common import click  # the click typer runs on (its own copy)
    from embedstore.cli.main import app

    group = typer.main.get_command(app)
    ctx = click.Context(group)
    bare = []
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        bare += [f"{name} {p.opts[0]}" for p in cmd.params if p.param_type_name == "option" and not (p.help or "").strip()]
        assert cmd.epilog and "embed " in cmd.epilog, f"{name} --help has no example"
    assert not bare, bare
    out = embed("serve", "--help").output
    assert all(route in out for route in ("/api/recommend", "/api/audit", "/api/search", "/api/predict"))


def test_a_file_where_a_folder_is_written_is_refused_before_any_work(image_folder, tmp_path):
    """--report, --plots, demo's and export's --out name folders to write into. A file there gave
    'unexpected FileExistsError' (exit 1), and only after the work: a whole build, a fitted head. One
    check (atomic.check_output_folder, through cli.common.check_output_folders) now refuses it first:
    one line naming the option and the fix, exit 2, and nothing in the folder written or changed."""
    s = tmp_path / "s.h5"
    assert run("build", image_folder, "--store", s, *TINY).exit_code == 0
    assert run("fit-head", "ridge", "--store", s, "--out", tmp_path / "h", "-q").exit_code == 0
    f = tmp_path / "f.csv"
    f.write_text("mine\n")

    def files():
        return {p: p.read_bytes() for p in sorted(tmp_path.rglob("*")) if p.is_file()}

    before = files()
    report = "takes a folder (the HTML report): give a new or empty folder"
    cases = [
        (["build", image_folder, "--store", tmp_path / "new.h5", *TINY, "--report", f], f"--report {f} is a file; --report {report}"),
        (["audit", s, "--report", s, "-q"], f"--report {s} is a file; --report {report}"),
        (["anomalies", "--store", s, "--report", s, "-q"], f"--report {s} is a file; --report {report}"),
        (["anomalies", "--store", s, "--plots", s, "-q"],
         f"--plots {s} is a file; --plots takes a folder (scores_by_label.png): give a new or empty folder"),
        (["recommend", s, "--like", "cat/cat_000.jpg", "--report", s], f"--report {s} is a file; --report {report}"),
        (["fit-head", "logistic", "--store", s, "--report", f, "-q"], f"--report {f} is a file; --report {report}"),
        (["fit-head", "logistic", "--store", s, "--plots", f, "-q"],
         f"--plots {f} is a file; --plots takes a folder (confusion.png, validation_curve.png): give a new or empty folder"),
        (["fit-head", "logistic", "--store", s, "--plots", f / "plots", "-q"],
         f"cannot write {f / 'plots'}: {f} is a file, not a folder; give a new or empty folder"),
        (["evaluate", tmp_path / "h", "--store", s, "--plots", f], f"--plots {f} is a file; --plots takes a folder (confusion.png): give a new or empty folder"),
        (["demo", "--out", f, "-q"], f"--out {f} is a file; --out takes a folder (the demo's images, store, head and report): give a new or empty folder"),
        (["export", s, "--out", f, "-q"], f"--out {f} is a file; --out takes a folder (the exported parts): choose a new folder"),
        (["export", s, "--out", f / "x", "-q"], f"cannot write {f / 'x'}: {f} is a file, not a folder; choose a new folder"),
    ]
    for args, message in cases:
        r = run(*args)
        assert r.exit_code == 2, (args, r.stderr, r.exception)
        assert r.stderr == f"error: {message}\n", (args, r.stderr)
    assert files() == before  # the store, the head and the file given: as they were, and nothing new
    assert not (tmp_path / "new.h5").exists()
