"""Image embedding: networks (torchvision backbones, one input channel, L2-normalised output), their
training, and the stable API the inference stage calls:

- :func:`load_embedder` (checkpoint -> :class:`Embedder`; ``Embedder.embed(images) -> (N, D)`` unit vectors),
- :func:`build_index` (library + checkpoint -> saved FAISS index; CLI ``python -m surrogate.embedding.index``),
- :func:`export_checkpoint` (slim shippable checkpoint; CLI ``python -m surrogate.embedding.export``).
"""

from surrogate.embedding.embed import Embedder, build_index, export_checkpoint, load_embedder
from surrogate.embedding.networks import BACKBONES, EmbeddingNet

__all__ = ["Embedder", "load_embedder", "build_index", "export_checkpoint", "BACKBONES", "EmbeddingNet"]
