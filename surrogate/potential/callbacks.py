"""Training callback of the potential stage: energy and force parity plots sent to the run's loggers.

:class:`PotentialTracker` (a :class:`~surrogate.tracking.callbacks.RunTracker`) adds, when training
ends, parity plots of the EMA network on the validation and test frames. Without loggers it does
nothing.
"""

from __future__ import annotations

import numpy as np

from surrogate.tracking.callbacks import RunTracker
from surrogate.tracking.figures import parity_figure
from surrogate.tracking.loggers import log_figure

__all__ = ["PotentialTracker", "parity_data"]


def parity_data(net, graphs, batch_size: int = 8, max_frames: int = 1000) -> dict[str, np.ndarray]:
    """Reference and predicted energy per atom [eV/atom] and force components [eV/Å] of ``net``
    on up to ``max_frames`` precomputed graphs."""

    from surrogate.potential.data import collate

    was_training = net.training
    net.eval()
    device, dtype = next(net.parameters()).device, next(net.parameters()).dtype
    out: dict[str, list] = {"energy_ref": [], "energy_pred": [], "forces_ref": [], "forces_pred": []}
    graphs = list(graphs)[:max_frames]
    for s in range(0, len(graphs), batch_size):
        b = {n: t.to(device) for n, t in collate(graphs[s : s + batch_size], dtype=dtype).items()}
        pred = net(b, compute_forces=True)
        n_atoms = b["n_atoms"].to(pred["energy"].dtype)
        out["energy_ref"].append((b["energy"] / n_atoms).detach().cpu().numpy())
        out["energy_pred"].append((pred["energy"] / n_atoms).detach().cpu().numpy())
        out["forces_ref"].append(b["forces"].detach().cpu().numpy().ravel())
        out["forces_pred"].append(pred["forces"].detach().cpu().numpy().ravel())
    net.train(was_training)
    return {k: np.concatenate(v) if v else np.zeros(0) for k, v in out.items()}


class PotentialTracker(RunTracker):
    """:class:`RunTracker` plus, at the end of training, energy and force parity plots
    (``parity/energy``, ``parity/forces``) of the EMA network on the validation and test frames
    (the training frames when there are neither)."""

    def on_train_end(self, trainer, pl_module) -> None:
        if not self._active(trainer) or trainer.datamodule is None:
            return

        dm = trainer.datamodule
        dm.setup()
        splits = {s: dm.graphs[s] for s in ("val", "test") if dm.graphs.get(s)} or {"train": dm.graphs["train"]}
        data = {s: parity_data(pl_module.averaged, g) for s, g in splits.items()}
        step = trainer.global_step
        for key, quantity, unit in (("energy", "energy", "eV/atom"), ("forces", "force component", "eV/Å")):
            fig = parity_figure(
                {s: d[f"{key}_ref"] for s, d in data.items()},
                {s: d[f"{key}_pred"] for s, d in data.items()},
                quantity,
                unit,
            )
            log_figure(trainer.loggers, f"parity/{key}", fig, step=step)
