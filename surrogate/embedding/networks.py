"""Embedding network: torchvision backbone (no pretrained weights), one input channel,
projection head, L2-normalised output. Network code only; the Lightning wrapper lives apart."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from surrogate.errors import ConfigError

__all__ = ["BACKBONES", "EmbeddingNet"]

BACKBONES = ("resnet18", "resnet34", "resnet50", "convnext_tiny", "efficientnet_b0")


def _one_channel(net: nn.Module) -> nn.Module:
    """Replace the first 3-channel convolution by a 1-channel one (same shape otherwise)."""
    for name, conv in net.named_modules():
        if isinstance(conv, nn.Conv2d) and conv.in_channels == 3:
            parent_name, _, attr = name.rpartition(".")
            parent = net.get_submodule(parent_name) if parent_name else net
            setattr(parent, attr, nn.Conv2d(1, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                                            conv.dilation, conv.groups, conv.bias is not None))
            return net
    raise ConfigError("backbone has no 3-channel input convolution to adapt")


class EmbeddingNet(nn.Module):
    """Backbone -> global pooling -> MLP projection -> unit vector.

    Parameters
    ----------
    backbone
        One of :data:`BACKBONES` (torchvision, ``weights=None``: nothing is downloaded).
    dim
        Embedding dimension.
    hidden
        Width of the projection head's hidden layer.
    """

    def __init__(self, backbone: str = "resnet18", dim: int = 128, hidden: int = 512):
        super().__init__()
        import torchvision.models as tvm

        if backbone not in BACKBONES:
            raise ConfigError(f"unknown backbone {backbone!r}: choose one of {', '.join(BACKBONES)}")
        net = getattr(tvm, backbone)(weights=None)
        _one_channel(net)
        if backbone.startswith("resnet"):
            features = net.fc.in_features
            net.fc = nn.Identity()
        else:  # convnext / efficientnet: classifier ends in a Linear
            features = net.classifier[-1].in_features
            net.classifier[-1] = nn.Identity()
        self.backbone, self.dim = net, dim
        self.head = nn.Sequential(nn.Linear(features, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 1:
            raise ValueError(f"expected a (B, 1, H, W) batch, got {tuple(x.shape)}")
        return F.normalize(self.head(self.backbone(x)), dim=1)
