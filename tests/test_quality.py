"""Lint and format (ruff, config in pyproject.toml) hold on the whole tree, and the check catches a
lint error. The type check (``mypy`` at the repository root, the pre-commit hook) takes minutes cold,
so it is not part of the suite."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

# the environment's own ruff first (the one the dev extras installed), then any on the PATH
RUFF = shutil.which("ruff", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
pytestmark = pytest.mark.skipif(RUFF is None, reason="ruff is not installed (pip install -e .[dev])")


def _run(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    assert RUFF is not None
    cmd = [RUFF, *args, "--config", str(REPO / "pyproject.toml"), "--no-cache"]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=60)


def test_the_tree_passes_ruff_check():
    res = _run("check", ".")
    assert res.returncode == 0, res.stdout + res.stderr


def test_the_tree_is_ruff_formatted():
    res = _run("format", "--check", ".")
    assert res.returncode == 0, "run `ruff format` on:\n" + res.stdout + res.stderr


def test_ruff_check_catches_an_undefined_name_and_an_unused_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import os\n\n\ndef f():\n    return undefined_name\n")
    res = _run("check", str(bad), cwd=tmp_path)
    assert res.returncode != 0
    assert "F401" in res.stdout  # `os` imported but unused
    assert "F821" in res.stdout  # undefined name
