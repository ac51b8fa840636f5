"""Every config composes, and the entry points run on it."""

import os
import subprocess
import sys

import pytest
from hydra import compose, initialize_config_module

from surrogate.library.build import _settings, unit_conditions
from surrogate.structures import plan_structures
from tests.conftest import REPO


@pytest.mark.parametrize("simulate", ["demo", "accurate"])
def test_every_config_group_composes_and_validates(simulate):
    with initialize_config_module(version_base="1.3", config_module="surrogate.configs"):
        cfg = compose(config_name="build_library", overrides=[f"simulate={simulate}"])
    recipes = plan_structures(cfg.structures)
    assert {r["kind"] for r in recipes} == {"bulk", "defect", "gb"}
    assert len(recipes) * cfg.library.images_per_structure >= 2000  # the demo library size
    _settings(cfg.simulate)
    conds = unit_conditions(cfg.simulate, 0, 50, cfg.library.sampling, 0)
    assert {c.mode for c in conds} <= {"haadf", "abf", "bf", "hrtem"} and len(conds) == 50
    for name in ("train", "infer"):
        with initialize_config_module(version_base="1.3", config_module="surrogate.configs"):
            compose(config_name=name, overrides=["image=x.png"] if name == "infer" else [])


def test_train_entry_point_reports_splits(tiny_library, tmp_path):
    res = subprocess.run(
        [sys.executable, str(REPO / "train.py"), f"library_dir={tiny_library}"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert res.returncode == 0, res.stderr
    assert "train" in res.stdout and "images" in res.stdout


def test_infer_entry_point_rejects_a_missing_image(tmp_path):
    res = subprocess.run(
        [sys.executable, str(REPO / "infer.py"), "image=nope.dm3"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert res.returncode == 2 and "error: image file not found: nope.dm3" in res.stderr


def test_a_user_error_raised_inside_hydra_instantiate_is_one_line(capsys):
    """A constructor's check (e.g. model.forces_loss) reaches the user as ``error: ...``, exit 2,
    although Hydra's instantiate wraps it; a bug wrapped the same way still propagates."""
    from hydra.utils import instantiate

    from surrogate.errors import exit_on_user_error

    @exit_on_user_error
    def build(cfg):
        return instantiate(cfg)

    with pytest.raises(SystemExit) as exit_:
        build(
            {
                "_target_": "surrogate.potential.module.PotentialModule",
                "net": None,
                "optimizer": None,
                "forces_loss": "l3",
            }
        )
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: model.forces_loss='l3': use mse or huber"
    with pytest.raises(Exception, match="nope"):
        build({"_target_": "builtins.int", "_args_": ["nope"]})
