"""Save and load trained potentials: a Lightning checkpoint of :class:`PotentialModule` or an
exported ``potential.pt`` (``{"surrogate": record, "state_dict": EMA weights}``); both load with
``torch.load(..., weights_only=True)``."""

from __future__ import annotations

from pathlib import Path

import torch

from surrogate.potential.errors import PotentialError
from surrogate.potential.model import Potential

__all__ = ["load_potential", "export_potential", "read_record"]

KIND = "surrogate.potential"  # = surrogate.io.checkpoints.POTENTIAL


def _load(path: str | Path) -> dict:
    from surrogate.io.checkpoints import POTENTIAL, load_torch_checkpoint

    return load_torch_checkpoint(
        path,
        PotentialError,
        "potential checkpoint",
        kind=POTENTIAL,
        hint="give a potential.pt or a .ckpt of a potential run (python train.py experiment=potential_si)",
    )


def read_record(path: str | Path) -> dict:
    """The record of a checkpoint: config, elements, cutoff, reference energies, scale, data hash."""
    return dict(_load(path)["surrogate"])


def load_potential(path: str | Path, ema: bool = True) -> Potential:
    """The network of a checkpoint (its EMA weights when present and ``ema``), in eval mode on CPU."""
    ckpt = _load(path)
    rec = ckpt["surrogate"]
    net = Potential(**rec["config"], ref_energies=rec["ref_energies"], scale=rec["scale"])
    state = ckpt["state_dict"]
    prefix = "ema.module." if ema and any(k.startswith("ema.module.") for k in state) else "net."
    if not any(k.startswith(prefix) for k in state):
        prefix = ""
    sub = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    try:
        net.load_state_dict(sub)
    except RuntimeError as exc:
        raise PotentialError(
            f"weights in {path} do not fit its recorded model config "
            f"({str(exc).splitlines()[0]}); the file is damaged or from another version"
        ) from None
    return net.eval()


def export_potential(net: Potential, record: dict, path: str | Path) -> Path:
    """Write the compact, crash-safe ``potential.pt`` for ``net`` with ``record``."""
    from surrogate.io.files import atomic_open

    path = Path(path)
    state = {k: v.detach().cpu() for k, v in net.state_dict().items()}
    with atomic_open(path, "wb") as fh:
        torch.save({"surrogate": dict(record), "state_dict": state}, fh)
    return path
