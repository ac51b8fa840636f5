"""The layers contract (.importlinter): stages import only earlier stages, and a back-import breaks it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

CONFIG = REPO / ".importlinter"


def _lint_imports() -> Path:
    exe = Path(sys.executable).parent / "lint-imports"
    if not exe.is_file():
        found = shutil.which("lint-imports")
        if found is None:
            pytest.skip("import-linter is not installed (pip install import-linter): the layers contract cannot run")
        exe = Path(found)
    return exe


def _check(root: Path) -> subprocess.CompletedProcess:
    """Run the contract on the ``surrogate`` package under ``root`` (found first on the path)."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(
        [str(_lint_imports()), str(CONFIG), "--no-cache", "--no-logo"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_package_keeps_its_layers():
    res = _check(REPO)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "1 kept, 0 broken" in res.stdout


def test_a_back_import_breaks_the_contract(tmp_path):
    _lint_imports()
    shutil.copytree(REPO / "surrogate", tmp_path / "surrogate", ignore=shutil.ignore_patterns("__pycache__"))
    crystals = tmp_path / "surrogate" / "structures" / "crystals.py"
    crystals.write_text(crystals.read_text() + "\n\ndef _back():\n    from surrogate.inference import pipeline\n")
    res = _check(tmp_path)
    assert res.returncode != 0
    assert "BROKEN" in res.stdout
    assert "surrogate.structures is not allowed to import surrogate.inference" in res.stdout
    assert "surrogate.structures.crystals -> surrogate.inference.pipeline" in res.stdout
