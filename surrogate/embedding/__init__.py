"""Image embedding networks (torchvision backbones, one input channel, L2-normalised output)."""

from surrogate.embedding.networks import BACKBONES, EmbeddingNet

__all__ = ["BACKBONES", "EmbeddingNet"]
