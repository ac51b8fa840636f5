"""Training callback of the embedding stage: what an embedding run did, sent to its loggers.

:class:`EmbeddingTracker` (a :class:`~surrogate.tracking.callbacks.RunTracker`) adds, when training
ends, a retrieval-examples table (query | top-k with distances and energies) and a 2-D projection of
the embedding coloured by structure family. Without loggers it does nothing.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from surrogate.tracking.callbacks import RunTracker
from surrogate.tracking.figures import projection_figure
from surrogate.tracking.loggers import log_figure, log_table

__all__ = ["EmbeddingTracker", "retrieval_examples"]


def _families(library_root) -> dict[str, str]:
    """Structure family of every configuration of the library in ``library_root`` ("?" if unrecorded)."""
    from surrogate.library.store import Library

    return {cid: str(r.columns.get("family", "?")) for cid, r in Library(library_root).structures().items()}


def retrieval_examples(
    module, dataset, library_root, n_images: int = 256, n_examples: int = 8, k: int = 5, seed: int = 0
) -> dict:
    """Embed up to ``n_images`` images of ``dataset`` clean (the gallery) and corrupted by the
    module's augmentation (the queries), and retrieve the top ``k`` gallery images of each query
    (its own clean copy excluded, as in validation).

    Returns
    -------
    dict
        ``columns`` / ``rows`` of the examples table (query | top-k image, configuration, family,
        distance 1 - cosine, energy [eV/atom] when the library has energies, match), and the gallery
        ``embeddings`` (N, D) with their ``families`` for a projection.
    """
    import torch

    from surrogate.embedding.embed import standardise
    from surrogate.library.store import int_to_id

    n = len(dataset)
    pick = np.unique(np.linspace(0, n - 1, min(n_images, n)).round().astype(int))
    items = [dataset[int(i)] for i in pick]
    images = torch.stack([it[0] for it in items])
    index = np.array([it[2] for it in items])
    cids = [int_to_id(int(c)) for c in np.asarray(dataset.library.config_ids())[index]]
    family_of = _families(library_root)
    families = [family_of.get(c, "?") for c in cids]
    energies = {}
    try:
        from surrogate.library.energies import read_energies

        energies = read_energies(library_root)
    except Exception:  # a library without energies: the table has no energy columns
        energies = {}
    has_energy = any(np.isfinite(v) for v in energies.values())

    was_training, device = module.training, module.device
    module.eval()
    zq_parts: list[torch.Tensor] = []
    zc_parts: list[torch.Tensor] = []
    shown_parts: list[np.ndarray] = []
    g = torch.Generator(device=device).manual_seed(int(seed))
    with torch.no_grad():
        for s in range(0, len(images), 64):
            x = images[s : s + 64].to(device)
            xq = module.augment(x, g)
            zq_parts.append(module(xq).float().cpu())
            zc_parts.append(module(standardise(x.float())).float().cpu())
            shown_parts.append(xq[:, 0].float().cpu().numpy())
    module.train(was_training)
    zq, zc, shown = torch.cat(zq_parts), torch.cat(zc_parts), np.concatenate(shown_parts)
    clean = standardise(images.float())[:, 0].numpy()
    sim = zq @ zc.T
    sim.fill_diagonal_(-2.0)
    kk = max(1, min(k, len(zc) - 1))
    top_sim, top = sim.topk(kk, dim=1)
    rows_at = np.unique(np.linspace(0, len(zq) - 1, min(n_examples, len(zq))).round().astype(int))

    columns = ["query", "query config", "query family"] + (["query energy [eV/atom]"] if has_energy else [])
    for r in range(1, kk + 1):
        columns += [f"top{r}", f"top{r} config", f"top{r} family", f"top{r} distance"]
        columns += [f"top{r} energy [eV/atom]"] if has_energy else []
        columns += [f"top{r} match"]
    rows = []
    for q in rows_at:
        row = [shown[q], cids[q], families[q]] + ([energies.get(cids[q], float("nan"))] if has_energy else [])
        for r in range(kk):
            j = int(top[q, r])
            row += [clean[j], cids[j], families[j], round(max(0.0, 1.0 - float(top_sim[q, r])), 4) + 0.0]
            row += [energies.get(cids[j], float("nan"))] if has_energy else []
            row += [cids[j] == cids[q]]
        rows.append(row)
    return {
        "columns": columns,
        "rows": rows,
        "embeddings": zc.numpy(),
        "families": families,
        "top1": float(np.mean([cids[int(top[q, 0])] == cids[q] for q in range(len(zq))])),
    }


class EmbeddingTracker(RunTracker):
    """:class:`RunTracker` plus, at the end of training, the retrieval-examples table
    (``val/retrieval_table``) and the embedding projection coloured by family
    (``val/embedding_projection``) on up to ``n_images`` validation images.

    Parameters
    ----------
    config, documents
        As :class:`RunTracker` (pass the library manifest as ``documents={"library_manifest": ...}``).
    n_images, n_examples, k
        Images embedded, table rows, and retrieved images per row.
    seed
        Seed of the query corruptions.
    """

    def __init__(
        self,
        config: Any = None,
        documents: Mapping[str, Mapping] | None = None,
        n_images: int = 256,
        n_examples: int = 8,
        k: int = 5,
        seed: int = 0,
    ):
        super().__init__(config, documents)
        self.n_images, self.n_examples, self.k, self.seed = int(n_images), int(n_examples), int(k), int(seed)

    def on_train_end(self, trainer, pl_module) -> None:
        if not self._active(trainer) or trainer.datamodule is None:
            return

        dm = trainer.datamodule
        ds = dm.val_set if len(dm.val_set) > 1 else dm.train_set
        ex = retrieval_examples(pl_module, ds, dm.library.root, self.n_images, self.n_examples, self.k, self.seed)
        step = trainer.global_step
        log_table(trainer.loggers, "val/retrieval_table", ex["columns"], ex["rows"], step=step)
        fig = projection_figure(
            ex["embeddings"], ex["families"], f"validation embeddings ({len(ex['families'])} images, PCA)"
        )
        log_figure(trainer.loggers, "val/embedding_projection", fig, step=step)
