"""Faults and bad input: a SIGKILL at any moment loses nothing and leaves nothing half-written that is
read back; every bad input to a reader or CLI gives one ``error:`` line and a non-zero exit, never a
traceback. (A killed library build: tests/test_library.py::test_killed_build_resumes_to_identical_content.)
The table of what was tried is docs/reliability.md."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from surrogate.errors import ImageError, LibraryError
from tests.conftest import REPO

ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def _kill_when(proc, ready, timeout=240.0, extra=0.0):
    """SIGKILL ``proc`` ``extra`` seconds after ``ready()`` turns true (or at ``timeout``)."""
    deadline = time.time() + timeout
    while time.time() < deadline and not ready() and proc.poll() is None:
        time.sleep(0.02)
    time.sleep(extra)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


# --- faults -----------------------------------------------------------------------------------------

SAVER = """
import sys, numpy as np
from surrogate.index import EmbeddingIndex
path, n = sys.argv[1], int(sys.argv[2])
rng = np.random.default_rng(0)
i = 0
while True:  # alternate sizes, so a sidecar paired with the other index would be caught
    m = n + (i % 2) * 997
    x = rng.standard_normal((m, 64)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    EmbeddingIndex(64, kind="flat", metadata={"round": i}).build(x).save(path)
    print(i, flush=True)
    i += 1
"""


def _check_index_or_absent(path):
    from surrogate.index import EmbeddingIndex

    try:
        index = EmbeddingIndex.load(path)
    except LibraryError as exc:
        assert "no index" in str(exc), exc  # a killed save reads as "not built", never as a damaged index
        return None
    meta = json.loads(path.with_name(path.name + ".json").read_text())
    assert len(index) == meta["count"] and index.dim == 64
    idx, _ = index.search(np.ones((1, 64), np.float32) / 8.0, 3)
    assert (idx >= 0).all()
    return meta["round"]


def test_killed_index_save_is_never_read_half_written(tmp_path):
    path = tmp_path / "index" / "i.faiss"
    script = tmp_path / "saver.py"
    script.write_text(SAVER)
    for delay in (0.0, 0.13, 0.31):
        proc = subprocess.Popen(
            [sys.executable, str(script), str(path), "200000"],
            env=ENV,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        proc.stdout.readline()  # one save has completed
        _kill_when(proc, lambda: True, extra=delay)
        _check_index_or_absent(path)  # (a killed save may leave a .i.faiss.*.tmp file; nothing reads those)


def test_interrupted_index_save_reads_as_not_built_and_inference_rebuilds(monkeypatch, tmp_path):
    import faiss

    from surrogate.index import EmbeddingIndex

    x = np.eye(16, dtype=np.float32)
    path = EmbeddingIndex(16, kind="flat").build(x).save(tmp_path / "i.faiss")

    def dies(index, name):  # half a file, then the process "dies"
        with open(name, "wb") as f:
            f.write(b"IxFI" + b"\0" * 100)
        raise KeyboardInterrupt

    monkeypatch.setattr(faiss, "write_index", dies)
    with pytest.raises(KeyboardInterrupt):
        EmbeddingIndex(16, kind="flat").build(x[:8]).save(path)
    assert path.is_file() and not path.with_name("i.faiss.json").exists()  # the old index without a sidecar
    assert [p.name for p in tmp_path.iterdir()] == ["i.faiss"]  # no temporary file left behind
    with pytest.raises(LibraryError, match="no index"):
        EmbeddingIndex.load(path)


def test_index_with_a_foreign_sidecar_is_refused(tmp_path):
    from surrogate.index import EmbeddingIndex

    a = EmbeddingIndex(8, kind="flat").build(np.eye(8, dtype=np.float32)).save(tmp_path / "a.faiss")
    EmbeddingIndex(8, kind="flat").build(np.eye(8, dtype=np.float32)[:4]).save(tmp_path / "b.faiss")
    shutil.copy(tmp_path / "b.faiss.json", tmp_path / "a.faiss.json")
    with pytest.raises(LibraryError, match="sidecar says 4 x 8"):
        EmbeddingIndex.load(a)


WRITER = """
import json, sys
from surrogate.io.files import atomic_write_text
path = sys.argv[1]
i = 0
while True:
    atomic_write_text(path, json.dumps({"round": i, "candidates": [{"rank": r, "pad": "x" * 5000} for r in range(400)]}))
    print(i, flush=True)
    i += 1
"""


def test_killed_output_writing_never_leaves_a_truncated_file(tmp_path):
    path = tmp_path / "out" / "candidates.json"
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    for delay in (0.0, 0.05, 0.17):
        proc = subprocess.Popen(
            [sys.executable, str(script), str(path)],
            env=ENV,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        proc.stdout.readline()
        _kill_when(proc, lambda: True, extra=delay)
        doc = json.loads(path.read_text())  # always whole: the old or the new file, never a prefix
        assert len(doc["candidates"]) == 400


@pytest.fixture(scope="module")
def hog_result(tiny_library):
    from surrogate.inference.pipeline import run_inference
    from surrogate.library import Library

    image = Library(tiny_library).image(4)
    from surrogate.io.readers import Micrograph

    mic = Micrograph(data=np.tile(image, (2, 2)).astype(np.float32), sampling=0.2, path="tiled.npy", metadata={})
    return run_inference(
        mic, tiny_library, preprocess={"denoise": "none"}, method="spectrum", refine={"top": 0}, progress=False
    )


def test_interrupted_report_leaves_no_candidates_json(hog_result, tmp_path, monkeypatch):
    """candidates.json is written last: a report interrupted on the way (a rerun into the same
    directory included) never leaves a candidates.json beside missing or stale files."""
    from surrogate.inference import report

    files = report.write_report(hog_result, tmp_path)
    assert json.loads(files["candidates"].read_text())["candidates"]
    assert all(p.stat().st_size > 0 for p in (tmp_path / "structures").iterdir())

    def dies(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(report, "_save_png", dies)
    with pytest.raises(KeyboardInterrupt):
        report.write_report(hog_result, tmp_path)
    assert not (tmp_path / "candidates.json").exists()
    assert not [p for p in tmp_path.rglob("*.tmp")]
    monkeypatch.undo()
    report.write_report(hog_result, tmp_path)  # the rerun completes the report
    assert json.loads((tmp_path / "candidates.json").read_text())["candidates"]


@pytest.mark.slow
def test_killed_training_resumes_from_its_last_checkpoint(tiny_library, tmp_path):
    import torch

    def cmd(run, *extra):
        return [
            sys.executable,
            str(REPO / "train.py"),
            "experiment=embedding_demo",
            f"library_dir={tiny_library}",
            f"paths.output_dir={run}",
            f"hydra.run.dir={run}",
            "model.net.dim=16",
            "data.classes_per_batch=2",
            "data.images_per_class=2",
            "trainer.max_epochs=40",
            "+trainer.limit_train_batches=2",
            "+trainer.limit_val_batches=1",
            "+trainer.enable_progress_bar=false",
            "logger=csv",
            "data.fractions=[0.5,0.5,0.0]",
            *extra,
        ]  # a validation split, so every epoch checkpoints

    run = tmp_path / "run"
    last = run / "checkpoints" / "last.ckpt"
    proc = subprocess.Popen(cmd(run), env=ENV, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _kill_when(proc, last.is_file)
    assert proc.returncode == -signal.SIGKILL
    killed = torch.load(last, map_location="cpu", weights_only=True)  # whole, readable
    assert killed["epoch"] < 39, "the kill must land before the end"
    per_epoch = killed["global_step"] // (killed["epoch"] + 1)
    r = subprocess.run(
        cmd(tmp_path / "run2", f"ckpt_path={last}"), env=ENV, cwd=tmp_path, capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr[-2000:]
    final = torch.load(tmp_path / "run2" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert final["epoch"] == 39 and final["global_step"] == 40 * per_epoch  # all 40 epochs, no step done twice or lost


# --- bad input: the image reader ---------------------------------------------------------------------


def _npy(value):
    def make(path):
        np.save(path, value, allow_pickle=True)

    return make


def _bytes(data):
    def make(path):
        path.write_bytes(data)

    return make


def _huge(path):
    np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(30000, 30000))  # sparse: 3.6 GB nominal


def _truncated_npy(path):
    np.save(path, np.random.rand(64, 64))
    path.write_bytes(path.read_bytes()[:300])


READER_CASES = {  # in addition to tests/test_readers.py (constant, NaN, empty array, tiny, RGB, missing,
    # truncated dm3/dm4, unknown suffix, empty tif, implausible pixel size, uncalibrated npy/png)
    "complex.npy": (_npy(np.exp(1j * np.random.rand(64, 64))), "unsupported pixel type complex"),
    "object.npy": (_npy(np.array([[None] * 64] * 64, dtype=object)), "cannot read"),
    "strings.npy": (_npy(np.array([["a"] * 64] * 64)), "unsupported pixel type"),
    "bool.npy": (_npy(np.random.rand(64, 64) > 0.5), "boolean"),
    "one_d.npy": (_npy(np.random.rand(4096)), "expected a 2-D image"),
    "four_d.npy": (_npy(np.random.rand(2, 2, 64, 64)), "expected a 2-D image"),
    "inf.npy": (_npy(np.where(np.eye(64) > 0, np.inf, 1.0) + np.arange(64)), "NaN/inf"),
    "huge.npy": (_huge, "too large"),
    "truncated.npy": (_truncated_npy, "truncated or corrupt"),
    "empty.npy": (_bytes(b""), "empty"),
    "garbage.png": (_bytes(b"\x89PNG\r\n\x1a\n garbage"), "truncated or corrupt"),
    "garbage.jpg": (_bytes(b"\xff\xd8\xff junk"), "truncated or corrupt"),
    "garbage.tif": (_bytes(b"II*\x00garbage" * 5), "no 2-D image"),
    "garbage.emd": (_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100), "truncated or corrupt"),
    "garbage.hspy": (_bytes(b"junk"), "truncated or corrupt"),
    "garbage.ser": (_bytes(b"junk" * 100), "truncated or corrupt"),
    "zeros.mrc": (_bytes(b"\0" * 1100), "empty"),
}


@pytest.mark.parametrize("name", sorted(READER_CASES))
def test_reader_bad_input_is_one_line(tmp_path, name):
    from surrogate.io.readers import read_image

    make, message = READER_CASES[name]
    make(tmp_path / name)
    with pytest.raises(ImageError, match=message) as err:
        read_image(tmp_path / name, pixel_size=0.2)
    assert "\n" not in str(err.value)


# --- bad input: the CLIs, called in-process with argv -----------------------------------------------


@pytest.fixture(scope="module")
def bad(tiny_library, tmp_path_factory):
    """Files for the CLI sweep: a good embedding checkpoint of the tiny library, damaged copies, a
    potential checkpoint, a library without manifest and one with a damaged image chunk."""
    import torch

    from surrogate.embedding.embed import FORMAT
    from surrogate.embedding.networks import EmbeddingNet
    from surrogate.library import Library

    d = tmp_path_factory.mktemp("bad")
    lib = Library(tiny_library)
    net_cfg = {"backbone": "resnet18", "dim": 16}
    rec = {
        "library_hash": lib.hash,
        "sampling": lib.sampling,
        "image_shape": lib.manifest["image_shape"],
        "net": net_cfg,
    }
    torch.manual_seed(0)
    torch.save({"format": FORMAT, "state_dict": EmbeddingNet(**net_cfg).state_dict(), "surrogate": rec}, d / "emb.pt")
    (d / "truncated.pt").write_bytes((d / "emb.pt").read_bytes()[:5000])
    (d / "empty.pt").write_bytes(b"")
    other = dict(rec, library_hash="0123456789abcdef")
    torch.save(
        {"format": FORMAT, "state_dict": EmbeddingNet(**net_cfg).state_dict(), "surrogate": other}, d / "other_lib.pt"
    )
    np.save(d / "q.npy", np.random.default_rng(0).random((64, 64)))
    np.save(d / "nan.npy", np.full((64, 64), np.nan))
    np.save(d / "rgb.npy", np.random.default_rng(0).random((64, 64, 3)))
    shutil.copytree(tiny_library, d / "no_manifest")
    (d / "no_manifest" / "manifest.json").unlink()
    shutil.copytree(tiny_library, d / "damaged")
    shutil.rmtree(d / "damaged" / "index", ignore_errors=True)  # no cached gallery or index to read instead
    chunk = sorted(
        p for p in (d / "damaged" / "images.zarr" / "images").rglob("*") if p.is_file() and p.name.isdigit()
    )[0]
    chunk.write_bytes(chunk.read_bytes()[:20])
    (d / "idx").mkdir()
    (d / "idx" / "junk.faiss").write_bytes(b"junk" * 100)
    (d / "idx" / "junk.faiss.json").write_text(
        json.dumps({"dim": 16, "kind": "flat", "count": 12, "library_hash": lib.hash})
    )
    return {"dir": d, "lib": tiny_library, "pot": REPO / "checkpoints" / "potential_demo.pt"}


def _infer(b, *extra, image="q.npy"):
    return [
        "surrogate-infer",
        f"image={b['dir'] / image}",
        "pixel_size=0.2",
        f"library_dir={b['lib']}",
        f"checkpoint={b['dir'] / 'emb.pt'}",
        "refine.top=0",
        f"hydra.run.dir={b['dir'] / 'run'}",
        *extra,
    ]


def _tiny_build(b):
    return [
        f"library.output_dir={b['dir'] / 'newlib'}",
        "library.images_per_structure=2",
        "library.shape=[32,32]",
        "structures.materials=[{name: Si}]",
        "structures.zone_axes=[[1,1,0]]",
        "structures.thicknesses=[8.0]",
        "structures.fov=[6.4,6.4]",
        "structures.boundaries=[]",
        "progress=false",
    ]


CLI_CASES = {
    # id: (entry point, argv builder, expected text in the error line)
    "infer/nan-image": ("infer", lambda b: _infer(b, image="nan.npy"), "NaN"),
    "infer/rgb-image": ("infer", lambda b: _infer(b, image="rgb.npy"), "channel="),
    "infer/missing-image": ("infer", lambda b: _infer(b, image="none.dm3"), "not found"),
    "infer/no-image": ("infer", lambda b: ["surrogate-infer", f"hydra.run.dir={b['dir'] / 'run'}"], "no image given"),
    "infer/uncalibrated": ("infer", lambda b: [a for a in _infer(b) if a != "pixel_size=0.2"], "pixel_size"),
    "infer/pixel-size-text": ("infer", lambda b: _infer(b, "pixel_size=abc"), "not a number"),
    "infer/k-zero": ("infer", lambda b: _infer(b, "retrieval.k=0"), "retrieval.k=0"),
    "infer/config-typo": ("infer", lambda b: _infer(b, "retrieval.kk=3"), "retrieval.kk"),
    "infer/truncated-checkpoint": (
        "infer",
        lambda b: _infer(b, f"checkpoint={b['dir'] / 'truncated.pt'}"),
        "cannot read",
    ),
    "infer/empty-checkpoint": ("infer", lambda b: _infer(b, f"checkpoint={b['dir'] / 'empty.pt'}"), "empty"),
    "infer/potential-as-embedding": ("infer", lambda b: _infer(b, f"checkpoint={b['pot']}"), "potential checkpoint"),
    "infer/checkpoint-of-other-library": (
        "infer",
        lambda b: _infer(b, f"checkpoint={b['dir'] / 'other_lib.pt'}"),
        "0123456789abcdef",
    ),
    "infer/library-without-manifest": (
        "infer",
        lambda b: _infer(b, f"library_dir={b['dir'] / 'no_manifest'}"),
        "no manifest",
    ),
    "infer/damaged-image-chunk": (
        "infer",
        lambda b: _infer(b, f"library_dir={b['dir'] / 'damaged'}", "method=hog"),
        "damaged",
    ),
    "infer/corrupt-index": ("infer", lambda b: _infer(b, f"index={b['dir'] / 'idx' / 'junk.faiss'}"), "corrupt index"),
    "build/config-typo": ("build", lambda b: ["x", "library.ouput_dir=x"], "library.ouput_dir"),
    "build/unknown-option": ("build", lambda b: ["x", "simulate=nonexistent"], "simulate/nonexistent"),
    "build/unknown-scheduler": (
        "build",
        lambda b: ["x", *_tiny_build(b), "library.scheduler=lcoal"],
        "library.scheduler='lcoal'",
    ),
    "build/unreachable-scheduler": (
        "build",
        lambda b: ["x", *_tiny_build(b), "library.scheduler=tcp://127.0.0.1:1"],
        "cannot reach the dask scheduler",
    ),
    "search/config-typo": ("search", lambda b: ["x", "serch.steps=3"], "serch.steps"),
    "train/unknown-experiment": ("train", lambda b: ["x", "experiment=embedding_dmeo"], "embedding_dmeo"),
    "train/truncated-resume-checkpoint": (
        "train",
        lambda b: [
            "x",
            "experiment=embedding_demo",
            f"library_dir={b['lib']}",
            f"ckpt_path={b['dir'] / 'truncated.pt'}",
        ],
        "cannot read",
    ),
    "train/potential-checkpoint-for-embedding": (
        "train",
        lambda b: ["x", "experiment=embedding_demo", f"library_dir={b['lib']}", f"ckpt_path={b['pot']}"],
        "potential checkpoint",
    ),
    "train/embedding-checkpoint-for-potential": (
        "train",
        lambda b: ["x", "experiment=potential_demo", f"ckpt_path={b['dir'] / 'emb.pt'}"],
        "embedding checkpoint",
    ),
    "train/missing-library": ("train", lambda b: ["x", f"library_dir={b['dir'] / 'nolib'}"], "no manifest"),
    "annotate/embedding-as-potential": (
        "annotate",
        lambda b: ["--library", str(b["lib"]), "--checkpoint", str(b["dir"] / "emb.pt"), "--no-progress"],
        "embedding checkpoint",
    ),
    "annotate/truncated-checkpoint": (
        "annotate",
        lambda b: ["--library", str(b["lib"]), "--checkpoint", str(b["dir"] / "truncated.pt"), "--no-progress"],
        "cannot read",
    ),
    "annotate/not-a-library": (
        "annotate",
        lambda b: ["--library", str(b["dir"]), "--checkpoint", str(b["pot"]), "--no-progress"],
        "no structures.db",
    ),
    "index/truncated-checkpoint": (
        "index",
        lambda b: [
            "--library",
            str(b["lib"]),
            "--checkpoint",
            str(b["dir"] / "truncated.pt"),
            "--out",
            str(b["dir"] / "x.faiss"),
        ],
        "cannot read",
    ),
}


def _entry(name):
    if name == "infer":
        from surrogate.inference.cli import main
    elif name == "build":
        from surrogate.library.cli import main
    elif name == "search":
        from surrogate.search.cli import main
    elif name == "train":
        from train import main
    elif name == "annotate":
        from surrogate.library.energies import main
    else:
        from surrogate.embedding.index import main
    return main


@pytest.mark.parametrize("case", sorted(CLI_CASES))
def test_cli_bad_input_is_one_error_line(bad, case, capsys, monkeypatch, tmp_path):
    entry, argv, message = CLI_CASES[case]
    argv = argv(bad)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        if entry in ("annotate", "index"):
            _entry(entry)(argv)
        else:
            _entry(entry)(argv[1:] + ([f"hydra.run.dir={tmp_path / 'run'}"] if entry != "infer" else []))
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert exit_.value.code not in (0, None)
    assert "Traceback" not in err
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], err


@pytest.mark.parametrize(
    "argv", [["infer.py", "image=x.npy", "retrieval.kk=3"], ["-m", "surrogate.library", "simulate=nonexistent"]]
)
def test_real_process_config_typo_is_one_line_exit_2(tmp_path, argv):
    """The same through a real console process (the in-process sweep above covers the rest)."""
    cmd = [
        sys.executable,
        *([str(REPO / argv[0])] if argv[0].endswith(".py") else argv[:2]),
        *(argv[1:] if argv[0].endswith(".py") else argv[2:]),
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=ENV)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in r.stderr
