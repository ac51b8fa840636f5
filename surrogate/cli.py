"""Shared start of the Hydra console scripts: a config typo or an unknown option becomes one line.

Hydra reports a bad override (``retrieval.kk=3``, ``simulate=nonexistent``) in six to twelve lines
and exits 1. :func:`run_hydra` composes the command line's overrides first and turns such a failure
into ``error: <one line>`` on stderr with exit status 2, as every other user error; the command then
runs through Hydra's own ``main`` (run directory, logging, ``--help``, ``--cfg``, multirun) unchanged.
"""

from __future__ import annotations

import re
import sys
from typing import Callable, Sequence

__all__ = ["run_hydra", "config_error_line"]


def config_error_line(exc: BaseException) -> str:
    """One line for a Hydra/OmegaConf composition error, naming the key or option and the fix."""
    text = str(exc)
    cause = str(exc.__cause__ or "").strip().splitlines()
    m = re.search(r"Could not override '([^']+)'", text)
    if m:
        key = m.group(1)
        why = cause[0] if cause else text.splitlines()[-1]
        return f"bad config override {key!r} ({why}): check the key's spelling; --cfg job shows the composed config"
    m = re.search(r"Could not find '([^']+)'", text)
    if m:
        opts = re.search(r"Available options in '([^']+)':\n((?:\t.*\n?)+)", text)
        listed = f"; options in {opts.group(1)!r}: " + ", ".join(o.strip() for o in opts.group(2).splitlines()) if opts else ""
        return f"no config {m.group(1)!r}{listed}"
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("Set the environment")]
    return "bad config: " + "; ".join(lines[:3]) if lines else f"bad config ({type(exc).__name__})"


def _check_experiment(name: str) -> None:
    from importlib.resources import files

    folder = files("surrogate.configs") / "experiment"
    known = sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))
    if name and name != "null" and name not in known:
        print(f"error: no experiment {name!r}; options: {', '.join(known)}", file=sys.stderr)
        sys.exit(2)


def run_hydra(hydra_main: Callable[[], None], config_name: str, argv: Sequence[str] | None = None) -> None:
    """Check the overrides in ``argv`` (default ``sys.argv[1:]``) against config ``config_name`` of
    ``surrogate.configs``, then call ``hydra_main`` (a ``@hydra.main`` function) with them.

    Command-line flags (``--help``, ``--cfg``, ``-m``) and ``hydra.*`` overrides are left to Hydra.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if not any(a.startswith("-") for a in argv):
        from hydra import compose, initialize_config_module
        from hydra.errors import HydraException
        from omegaconf.errors import OmegaConfBaseException

        overrides = [a for a in argv if not a.lstrip("+~").startswith(("hydra.", "hydra/", "hydra="))]
        for a in overrides:  # the experiment group is optional in the defaults, so Hydra skips a misspelt one
            if a.lstrip("+").startswith("experiment="):
                _check_experiment(a.split("=", 1)[1])
        try:
            with initialize_config_module(version_base="1.3", config_module="surrogate.configs"):
                compose(config_name=config_name, overrides=overrides)
        except (HydraException, OmegaConfBaseException) as exc:
            print(f"error: {config_error_line(exc)}", file=sys.stderr)
            sys.exit(2)
    sys.argv = [sys.argv[0], *argv]
    hydra_main()
