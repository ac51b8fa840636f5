"""Lightning wrapper around :class:`surrogate.potential.model.Potential`: energy + force (+ stress)
loss, an exponential moving average (EMA) of the weights for validation and export, and a
checkpoint record (elements, cutoff, reference energies, data hash) for the calculator."""

from __future__ import annotations

from typing import Callable, cast

import lightning as L
import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from surrogate.errors import ConfigError
from surrogate.potential.model import Potential

__all__ = ["PotentialModule", "evaluate", "CHECKPOINT_KIND"]

CHECKPOINT_KIND = "surrogate.potential"


def _stress_residual(pred, ref, deviatoric: bool):
    if deviatoric:  # drop the isotropic part (e.g. a Pulay offset of the labels)
        pred = pred.clone()
        ref = ref.clone()
        pred[:, :3] -= pred[:, :3].mean(1, keepdim=True)
        ref[:, :3] -= ref[:, :3].mean(1, keepdim=True)
    return pred - ref


class PotentialModule(L.LightningModule):
    """Parameters
    ----------
    net
        The potential (built with the training set's elements, reference energies and scale).
    optimizer, scheduler
        Partials (Hydra ``_partial_: true``) taking parameters / the optimizer; the scheduler is
        stepped per epoch on ``val/loss`` when it is a ``ReduceLROnPlateau``.
    energy_weight, forces_weight, stress_weight
        Loss = w_E mean((dE/N)^2) [eV^2/atom^2] + w_F mean(dF^2) [eV^2/Å^2] + w_S mean(dσ^2) [eV^2/Å^6]
        (stress only over frames that have it).
    stress_deviatoric
        Train the stress without its isotropic part.
    forces_loss, huber_delta
        ``"mse"`` (default) or ``"huber"``: ``2 * huber(dF, delta)`` per component, equal to dF^2 for
        |dF| < delta [eV/Å] and linear beyond, so a few large-force frames (high-temperature MD,
        surfaces) stop dominating a fit judged by its mean absolute error.
    ema_decay
        Decay of the EMA of the weights (0 disables); validation, checkpoints and export use the EMA.
    data_hash
        Hash of the training frames, recorded in every checkpoint.
    """

    def __init__(
        self,
        net: Potential,
        optimizer: Callable,
        scheduler: Callable | None = None,
        energy_weight: float = 1.0,
        forces_weight: float = 0.01,
        stress_weight: float = 0.0,
        stress_deviatoric: bool = False,
        ema_decay: float = 0.99,
        data_hash: str | None = None,
        forces_loss: str = "mse",
        huber_delta: float = 0.1,
    ):
        super().__init__()
        if forces_loss not in ("mse", "huber"):
            raise ConfigError(f"model.forces_loss={forces_loss!r}: use mse or huber")
        if forces_loss == "huber" and not huber_delta > 0:
            raise ConfigError(f"model.huber_delta={huber_delta} must be > 0 (eV/Å, e.g. 0.1)")
        self.save_hyperparameters(ignore=["net", "optimizer", "scheduler"])
        self.net = net
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.ema = (
            AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(ema_decay), use_buffers=True)
            if ema_decay > 0
            else None
        )
        if self.ema is not None:
            self.ema.requires_grad_(False)
        self._val: list[torch.Tensor] = []
        self.skipped_steps = 0  # optimizer steps skipped for a non-finite loss or gradient

    @property
    def averaged(self) -> Potential:
        """The EMA network (or the raw one without EMA)."""
        return cast(Potential, self.ema.module) if self.ema is not None else self.net

    def _use_stress(self, batch) -> bool:
        return self.hparams["stress_weight"] > 0 and "stress" in batch

    def _losses(self, out, batch):
        hp = self.hparams
        n = batch["n_atoms"].to(out["energy"].dtype)
        de = (out["energy"] - batch["energy"]) / n
        df = out["forces"] - batch["forces"]
        if hp.get("forces_loss", "mse") == "huber":
            lf = 2 * torch.nn.functional.huber_loss(df, torch.zeros_like(df), delta=hp.huber_delta)
        else:
            lf = (df**2).mean()
        parts = {"energy": (de**2).mean(), "forces": lf}
        loss = hp.energy_weight * parts["energy"] + hp.forces_weight * parts["forces"]
        if "stress" in out:
            mask = batch["stress_mask"]
            if mask.any():
                ds = _stress_residual(out["stress"][mask], batch["stress"][mask], hp.stress_deviatoric)
                parts["stress"] = (ds**2).mean()
                loss = loss + hp.stress_weight * parts["stress"]
        return loss, parts, de, df

    def training_step(self, batch, batch_idx):
        out = self.net(batch, compute_forces=True, compute_stress=self._use_stress(batch))
        loss, parts, _, _ = self._losses(out, batch)
        bs = int(batch["n_atoms"].numel())
        if not torch.isfinite(loss):  # one bad step would turn every weight (and the EMA) into NaN
            self._skip("loss")
            return None  # Lightning skips backward and the optimizer step
        self.log("train/loss", loss, prog_bar=True, batch_size=bs)
        for k, v in parts.items():
            self.log(f"train/{k}_mse", v, batch_size=bs)
        return loss

    def on_before_optimizer_step(self, optimizer):
        grads = [p.grad for p in self.net.parameters() if p.grad is not None]
        if grads and not torch.isfinite(torch.stack([g.abs().sum() for g in grads]).sum()):
            for p in self.net.parameters():
                p.grad = None  # torch optimizers leave parameters without a gradient untouched
            self._skip("gradient")

    def _skip(self, what: str) -> None:
        self.skipped_steps += 1
        if self.skipped_steps <= 3 or self.skipped_steps % 100 == 0:
            print(
                f"warning: non-finite {what} at epoch {self.current_epoch}, step {self.global_step}: optimizer step "
                f"skipped ({self.skipped_steps} so far)",
                flush=True,
            )

    def on_train_batch_end(self, outputs, batch, batch_idx):
        if self.ema is not None:
            self.ema.update_parameters(self.net)

    def validation_step(self, batch, batch_idx):
        net = self.averaged
        net.eval()
        out = net(batch, compute_forces=True, compute_stress=self._use_stress(batch))
        loss, _, de, df = self._losses({k: v.detach() for k, v in out.items()}, batch)
        self._val.append(
            torch.stack(
                [
                    loss * de.numel(),
                    de.abs().sum(),
                    torch.tensor(float(de.numel()), device=de.device),
                    df.abs().sum(),
                    torch.tensor(float(df.numel()), device=df.device),
                ]
            )
        )

    def on_validation_epoch_end(self):
        if not self._val:
            return
        t = torch.stack(self._val).sum(0)
        self._val.clear()
        self.log("val/loss", t[0] / t[2], prog_bar=True)
        self.log("val/energy_mae", 1000 * t[1] / t[2], prog_bar=True)  # meV/atom
        self.log("val/forces_mae", 1000 * t[3] / t[4], prog_bar=True)  # meV/Å
        if self.trainer is not None and not self.trainer.sanity_checking and self.trainer.is_global_zero:
            lr = self.trainer.optimizers[0].param_groups[0]["lr"] if self.trainer.optimizers else float("nan")
            print(
                f"epoch {self.current_epoch}: val energy MAE {1000 * t[1] / t[2]:.2f} meV/atom, force MAE "
                f"{1000 * t[3] / t[4]:.1f} meV/Å, loss {t[0] / t[2]:.3g}, lr {lr:.2g}",
                flush=True,
            )

    def configure_optimizers(self):
        opt = self.optimizer_factory(params=self.net.parameters())
        if self.scheduler_factory is None:
            return opt
        sched = self.scheduler_factory(optimizer=opt)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "monitor": "val/loss", "interval": "epoch"}}

    def record(self) -> dict:
        """What the calculator needs besides the weights (plain types only)."""
        net = self.net
        return {
            "kind": CHECKPOINT_KIND,
            "format": 1,
            "config": dict(net.config),
            "elements": list(net.elements),
            "cutoff": float(net.cutoff),
            "ref_energies": [float(x) for x in cast(torch.Tensor, net.ref_energies).cpu()],
            "scale": float(cast(torch.Tensor, net.scale)),
            "data_hash": self.hparams["data_hash"],
        }

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["surrogate"] = self.record()


@torch.no_grad()
def evaluate(
    net: Potential, graphs, batch_size: int = 8, device: str | torch.device = "cpu", stress: bool = True
) -> dict:
    """Energy MAE [meV/atom], force-component MAE [meV/Å] (and stress MAE [GPa] where labelled) of
    ``net`` on precomputed graphs."""
    from ase import units

    from surrogate.potential.data import collate

    net = net.to(device).eval()
    dtype = next(net.parameters()).dtype
    e_err, f_err, s_err, n_f = [], [], [], 0
    for k in range(0, len(graphs), batch_size):
        b = {n: t.to(device) for n, t in collate(graphs[k : k + batch_size], dtype=dtype).items()}
        out = net(b, compute_forces=True, compute_stress=stress and "stress" in b)
        e_err.append(((out["energy"] - b["energy"]) / b["n_atoms"]).abs().cpu())
        f_err.append((out["forces"] - b["forces"]).abs().sum().cpu())
        n_f += b["forces"].numel()
        if "stress" in out and b["stress_mask"].any():
            m = b["stress_mask"]
            s_err.append((out["stress"][m] - b["stress"][m]).abs().reshape(-1).cpu())
    res = {
        "n_frames": len(graphs),
        "energy_mae": 1000 * float(torch.cat(e_err).mean()),
        "forces_mae": 1000 * float(sum(f_err)) / max(n_f, 1),
    }
    if s_err:
        res["stress_mae_gpa"] = float(torch.cat(s_err).mean()) / units.GPa
    return res
