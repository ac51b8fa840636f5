"""Shared start of the Hydra console scripts: a config typo or an unknown option becomes one line.

Hydra reports a bad override (``retrieval.kk=3``, ``simulate=nonexistent``) in six to twelve lines
and exits 1. :func:`run_hydra` composes the command line's overrides first and turns such a failure
into ``error: <one line>`` on stderr with exit status 2, as every other user error; the command then
runs through Hydra's own ``main`` (run directory, logging, ``--help``, ``--cfg``, multirun) unchanged.
"""

from __future__ import annotations

import re
import sys
from typing import Any, Callable, Sequence, cast

__all__ = ["run_hydra", "config_error_line", "config_dict", "quiet_console"]


def config_error_line(exc: BaseException) -> str:
    """One line for a Hydra/OmegaConf composition error, naming the key or option and the fix."""
    text = str(exc)
    cause = str(exc.__cause__ or "").strip().splitlines()
    m = re.search(r"Could not override '([^']+)'", text)
    if m:
        key = m.group(1)
        why = cause[0] if cause else text.splitlines()[-1]
        return f"bad config override {key!r} ({why}): check the key's spelling; --cfg job shows the composed config"
    m = re.search(r"Error merging override ([^=\s]+)=(.*)", text)
    if m:  # a typed setting (structured schema) refused the value
        key, value = m.group(1), m.group(2).strip()
        why = cause[0] if cause else text
        kind = re.search(r"could not be converted to (\w+)", why)
        if kind:
            need = {"Float": "is not a number", "Integer": "must be an integer", "Boolean": "must be true or false"}
            return f"{key}={value} {need.get(kind.group(1), 'has the wrong type (' + kind.group(1) + ')')}"
        return f"bad config override {key!r} ({why}): check the value; --cfg job shows the composed config"
    m = re.search(r"Could not find '([^']+)'", text)
    if m:
        opts = re.search(r"Available options in '([^']+)':\n((?:\t.*\n?)+)", text)
        listed = (
            f"; options in {opts.group(1)!r}: " + ", ".join(o.strip() for o in opts.group(2).splitlines())
            if opts
            else ""
        )
        return f"no config {m.group(1)!r}{listed}"
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("Set the environment")]
    return "bad config: " + "; ".join(lines[:3]) if lines else f"bad config ({type(exc).__name__})"


def config_dict(node: Any) -> dict[str, Any]:
    """A mapping node of a composed config (``cfg.search``, ``cfg.dft``) as a plain dict,
    interpolations resolved: what a stage function takes as keyword arguments."""
    from omegaconf import OmegaConf

    return cast("dict[str, Any]", OmegaConf.to_container(node, resolve=True))


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


#: third-party loggers that install their own console handler (and stop propagation) on import
_SELF_HANDLED = ("distributed", "bokeh", "tornado")


def quiet_console(verbose: bool = False) -> None:
    """Send library and third-party INFO lines to the run's log file only: the console keeps
    progress bars, warnings and the result (``verbose=True``: INFO on the console too).

    Hydra's job logging writes every record to ``<run dir>/<job>.log`` and to the console; this
    raises the console handlers' level to WARNING. dask.distributed attaches its own stderr handler
    to its loggers and stops their propagation: those handlers are removed and the records routed
    through the root logger, so they reach the log file like everyone else's (call this again
    after starting a dask cluster: distributed installs them on import).
    """
    import logging

    level = logging.INFO if verbose else logging.WARNING
    root = logging.getLogger()
    for h in root.handlers:
        if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler):
            h.setLevel(level)
    for name in list(logging.root.manager.loggerDict):
        if name.split(".")[0] in _SELF_HANDLED:
            lg = logging.getLogger(name)
            for h in list(lg.handlers):
                if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler):
                    lg.removeHandler(h)
            lg.propagate = True
