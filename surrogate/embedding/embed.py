"""Stable public API of the embedding stage: load a trained embedder, embed images, index a library.

``load_embedder(checkpoint)`` returns an :class:`Embedder` whose ``embed(images)`` maps ``(N, H, W)``
images at the library's canonical sampling to ``(N, D)`` unit vectors; ``build_index(library,
checkpoint, out)`` embeds every library image and saves a FAISS index (row ``i`` = library image
``i``) that records the checkpoint and library it was built from.

Checkpoints are either Lightning checkpoints written by ``python train.py experiment=embedding_*``
or the slim export of :func:`export_checkpoint` (network weights + the ``surrogate`` record only,
what ``checkpoints/`` ships). Both are read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from surrogate.errors import ConfigError, LibraryError
from surrogate.io.files import file_hash

__all__ = ["Embedder", "load_embedder", "export_checkpoint", "build_index", "file_hash", "standardise"]

FORMAT = "surrogate-embedding/1"


def standardise(images):
    """Zero mean, unit standard deviation per image (torch ``(B, 1, H, W)``); the last step of
    :class:`surrogate.augment.Corrupt`, so inference sees what training saw."""
    mean = images.mean(dim=(2, 3), keepdim=True)
    return (images - mean) / images.std(dim=(2, 3), keepdim=True).clamp_min(1e-6)


def read_checkpoint(path: str | os.PathLike) -> dict:
    """Load a surrogate embedding checkpoint (Lightning or slim) with ``weights_only=True``; a missing,
    unreadable, foreign or potential checkpoint is a one-line :class:`LibraryError`."""
    from surrogate.io.checkpoints import EMBEDDING, load_torch_checkpoint

    return load_torch_checkpoint(
        path,
        LibraryError,
        "embedding checkpoint",
        kind=EMBEDDING,
        hint="train one (python train.py experiment=embedding_demo) or use checkpoints/",
    )


def _read(path: Path) -> dict:
    ckpt = read_checkpoint(path)
    rec = ckpt["surrogate"]
    if "net" not in rec:
        raise LibraryError(f"{path} records no network config (written before the embedding API): retrain it")
    state = ckpt["state_dict"]
    if ckpt.get("format") != FORMAT:  # Lightning checkpoint: keep the network's weights
        state = {k[len("net.") :]: v for k, v in state.items() if k.startswith("net.")}
    return {"state_dict": state, "surrogate": rec}


class Embedder:
    """A trained embedding network in evaluation mode.

    Attributes
    ----------
    library_hash
        Hash of the library the network was trained on.
    sampling
        Canonical sampling [Å/px] the images must have.
    image_shape
        ``(H, W)`` [px] of the library images (and of the images :meth:`embed` accepts).
    dim
        Embedding dimension.
    checkpoint, checkpoint_hash
        Path of the checkpoint and the SHA-256 of its bytes (16 hex characters).
    """

    def __init__(
        self, net, record: dict, checkpoint: str | None = None, checkpoint_hash: str | None = None, device: str = "cpu"
    ):
        self.net = net.eval().to(device)
        self.device = device
        self.library_hash = str(record["library_hash"])
        self.sampling = float(record["sampling"])
        self.image_shape = tuple(int(v) for v in record["image_shape"])
        self.dim = int(record["net"]["dim"])
        self.config = dict(record["net"])
        self.checkpoint, self.checkpoint_hash = checkpoint, checkpoint_hash

    def __repr__(self) -> str:
        return (
            f"Embedder({self.config['backbone']}, dim={self.dim}, library={self.library_hash}, "
            f"sampling={self.sampling} Å/px, image_shape={self.image_shape})"
        )

    def check_library(self, library) -> None:
        """Raise :class:`LibraryError` unless ``library`` (a :class:`surrogate.library.Library`) is the
        one this network was trained on."""
        if library.hash != self.library_hash or abs(library.sampling - self.sampling) > 1e-9:
            raise LibraryError(
                f"checkpoint {self.checkpoint} was trained on library {self.library_hash} at {self.sampling} Å/px, "
                f"not {library.root} ({library.hash} at {library.sampling} Å/px): use a checkpoint of this library or train anew"
            )

    def embed(self, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Embed images.

        Parameters
        ----------
        images
            ``(N, H, W)`` (or one ``(H, W)``) float images at :attr:`sampling` [Å/px] with
            ``(H, W) == image_shape``; any intensity scale (each image is standardised).
        batch_size
            Images per forward pass.

        Returns
        -------
        numpy.ndarray
            ``(N, D)`` float32 unit vectors.
        """
        import torch

        images = np.asarray(images, dtype=np.float32)
        if images.ndim == 2:
            images = images[None]
        if images.ndim != 3 or tuple(images.shape[1:]) != self.image_shape:
            raise ConfigError(
                f"expected images of shape (N, {self.image_shape[0]}, {self.image_shape[1]}) at {self.sampling} Å/px, "
                f"got {images.shape}: resample to the library's sampling and crop to {self.image_shape}"
            )
        if not np.isfinite(images).all():
            raise ConfigError("images contain NaN or inf: clean the input before embedding")
        out = np.zeros((len(images), self.dim), np.float32)
        with torch.inference_mode():
            for s in range(0, len(images), batch_size):
                x = torch.from_numpy(images[s : s + batch_size])[:, None].to(self.device)
                out[s : s + batch_size] = self.net(standardise(x)).float().cpu().numpy()
        return out


def load_embedder(checkpoint_path: str | os.PathLike, device: str = "cpu", library=None) -> Embedder:
    """Load a trained embedder.

    Parameters
    ----------
    checkpoint_path
        Lightning checkpoint of an embedding run or its slim export (``checkpoints/*.pt``).
    device
        ``cpu``, ``cuda`` (or ``cuda:N``) or ``auto`` (CUDA when available).
    library
        Optional library directory or :class:`surrogate.library.Library`; a checkpoint trained on
        another library raises :class:`LibraryError`.
    """
    import torch

    from surrogate.embedding.networks import EmbeddingNet

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={device} but no CUDA device is available: use device=cpu")
    path = Path(checkpoint_path)
    ckpt = _read(path)
    rec = ckpt["surrogate"]
    for key in ("library_hash", "sampling", "image_shape"):
        if rec.get(key) is None:
            raise LibraryError(f"{path} does not record {key}: retrain or re-export it")
    net = EmbeddingNet(**rec["net"])
    try:
        net.load_state_dict(ckpt["state_dict"])
    except RuntimeError as exc:
        raise LibraryError(f"{path}: weights do not fit the recorded network ({str(exc).splitlines()[0]})") from None
    emb = Embedder(net, rec, str(path), file_hash(path), device)
    if library is not None:
        from surrogate.library import Library

        emb.check_library(library if isinstance(library, Library) else Library(library))
    return emb


def export_checkpoint(checkpoint_path: str | os.PathLike, out_path: str | os.PathLike, half: bool = False) -> Path:
    """Write the slim, shippable form of a checkpoint: network weights and the ``surrogate`` record
    (no optimiser state). ``half`` stores float16 weights (loaded back as float32)."""
    import torch

    from surrogate.io.files import atomic_open

    ckpt = _read(Path(checkpoint_path))
    state = {k: (v.half() if half and v.is_floating_point() else v) for k, v in ckpt["state_dict"].items()}
    out = Path(out_path)
    with atomic_open(out, "wb") as f:
        torch.save({"format": FORMAT, "state_dict": state, "surrogate": ckpt["surrogate"]}, f)
    return out


def build_index(
    library_dir: str | os.PathLike,
    checkpoint_path: str | os.PathLike,
    out_path: str | os.PathLike,
    kind: str = "auto",
    device: str = "cpu",
    batch_size: int = 256,
    **index_kw: Any,
):
    """Embed every image of a library and save a FAISS index of them.

    Row ``i`` of the index is library image ``i`` (its configuration is ``Library.config_ids()[i]``).
    The sidecar records ``checkpoint`` (path), ``checkpoint_hash``, ``library_hash``, ``sampling`` and
    ``image_shape``; load it with ``EmbeddingIndex.load(out, expect={"checkpoint_hash": ...})``.

    Returns
    -------
    surrogate.index.EmbeddingIndex
    """
    from surrogate.index import EmbeddingIndex  # the next stage, imported only to build its input
    from surrogate.library import Library

    lib = Library(library_dir)
    emb = load_embedder(checkpoint_path, device=device, library=lib)
    chunk = int(lib.manifest.get("images_per_structure", 64)) * 4
    vecs = np.concatenate(
        [emb.embed(np.asarray(lib.group["images"][s : s + chunk]), batch_size) for s in range(0, len(lib), chunk)]
    )
    meta = {
        "checkpoint": str(Path(checkpoint_path)),
        "checkpoint_hash": emb.checkpoint_hash,
        "library_hash": lib.hash,
        "sampling": lib.sampling,
        "image_shape": list(emb.image_shape),
    }
    index = EmbeddingIndex(emb.dim, kind=kind, metadata=meta, **index_kw).build(vecs)
    index.save(out_path)
    return index
