"""Typed inference settings: one home for every default, refused typos and values, a quiet console."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from surrogate.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def _compose(*overrides):
    from hydra import compose, initialize_config_module

    with initialize_config_module(version_base="1.3", config_module="surrogate.configs"):
        return compose(config_name="infer", overrides=["image=x.png", "output_dir=out", *overrides])


def test_the_settings_classes_are_the_only_home_of_the_stage_defaults():
    from surrogate.inference.settings import InferConfig, InferenceSettings

    composed = InferConfig.from_config(_compose())
    defaults = InferenceSettings()
    for stage in ("preprocess", "retrieval", "lattice_check", "rank", "refine"):
        assert getattr(composed, stage) == getattr(defaults, stage), stage
    # infer.yaml sets no stage value itself (a second home would drift from the dataclass)
    import yaml

    from surrogate.inference.settings import __file__ as settings_file  # noqa: F401

    raw = yaml.safe_load((REPO / "surrogate" / "configs" / "infer.yaml").read_text())
    assert not {"preprocess", "retrieval", "lattice_check", "rank", "refine"} & set(raw)
    # a command-line override reaches the stage object, typed
    s = InferConfig.from_config(_compose("refine.top=0", "retrieval.k=4", "lattice_check.tolerance=0.2"))
    assert (s.refine.top, s.retrieval.k, s.lattice_check.tolerance) == (0, 4, 0.2)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"retrieval": {"k": 0}}, "retrieval.k=0 must be >= 1"),
        ({"retrieval": {"kk": 3}}, "retrieval.kk"),
        ({"retrieval": {"k": "many"}}, "retrieval.k"),
        ({"retrieval": {"elements": ["Cd", "Xx"]}}, "unknown element"),
        ({"retrieval": {"mode": "stem"}}, "choose one of"),
        ({"lattice_check": {"mode": "strict"}}, "lattice_check.mode"),
        ({"lattice_check": {"tolerance": 0}}, "lattice_check.tolerance"),
        ({"refine": {"score": "ssim"}}, "refine.score"),
        ({"refine": {"window": "left"}}, "refine.window"),
        ({"refine": {"search": -1}}, "refine.search"),
        ({"preprocess": {"denoise": "median"}}, "preprocess.denoise"),
        ({"method": "orb"}, "unknown method"),
    ],
)
def test_a_bad_setting_is_one_config_error_naming_its_key(overrides, message):
    from surrogate.inference.settings import InferenceSettings

    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace(".", r"\.")):
        InferenceSettings.from_config(**overrides)


def test_cli_type_errors_are_one_line(capsys):
    from surrogate.inference.cli import main

    for arg, message in (
        ("retrieval.k=many", "retrieval.k=many must be an integer"),
        ("pixel_size=abc", "not a number"),
    ):
        with pytest.raises(SystemExit) as exit_:
            main(["image=x.npy", arg])
        err = capsys.readouterr().err.strip().splitlines()
        assert exit_.value.code == 2 and len(err) == 1 and message in err[0], err


def test_the_console_shows_the_result_and_the_log_file_keeps_the_library_logs(tiny_library, embedder_ckpt, tmp_path):
    """faiss announces how it loaded at INFO: that line belongs in the run's log, not between the
    progress bar and the answer; verbose=true brings it back to the console."""
    from surrogate.library import Library

    lib = Library(tiny_library)
    np.save(tmp_path / "q.npy", np.tile(lib.image(4), (2, 2)))

    def run(*extra):
        args = [
            sys.executable,
            str(REPO / "infer.py"),
            f"image={tmp_path / 'q.npy'}",
            f"library_dir={tiny_library}",
            f"checkpoint={embedder_ckpt}",
            "pixel_size=0.2",
            "refine.top=0",
            *extra,
        ]
        return subprocess.run(args, capture_output=True, text=True, timeout=300, cwd=tmp_path)

    quiet = run(f"hydra.run.dir={tmp_path / 'quiet'}")
    assert quiet.returncode == 0, quiet.stderr
    console = quiet.stdout + quiet.stderr
    assert "best:" in quiet.stdout and "report:" in quiet.stdout
    assert "INFO" not in console and "faiss" not in console
    logs = "".join(p.read_text() for p in (tmp_path / "quiet").glob("*.log"))
    assert "[faiss.loader][INFO]" in logs
    loud = run(f"hydra.run.dir={tmp_path / 'loud'}", "verbose=true")
    assert loud.returncode == 0 and "[faiss.loader][INFO]" in loud.stdout + loud.stderr


def test_relax_takes_the_librarys_potentials_and_skips_without_one(tmp_path):
    from types import SimpleNamespace

    from surrogate.inference.refine import _relax_calculators
    from surrogate.inference.settings import RefineSettings
    from surrogate.library.energies import calculator_for

    bare = SimpleNamespace(root=tmp_path)  # a library without energies.json: relaxation (on by default) is skipped
    assert RefineSettings().relax and _relax_calculators(bare, RefineSettings()) == {}
    with pytest.raises(ConfigError, match="refine.relax_top"):
        RefineSettings(relax_top=-1)
    with pytest.raises(ConfigError, match="refine.relax_max_atoms"):
        RefineSettings(relax_max_atoms=0)
    from ase.build import bulk

    cdte, si = object(), object()
    calcs = {frozenset({"Cd", "Te", "Se", "Cl"}): cdte, frozenset({"Si"}): si}
    assert calculator_for(calcs, bulk("CdTe", "zincblende", a=6.48)) is cdte
    assert calculator_for(calcs, bulk("Si", "diamond", a=5.43)) is si
    assert calculator_for(calcs, bulk("Ge", "diamond", a=5.66)) is None  # no potential knows Ge: not relaxed
