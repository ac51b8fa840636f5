"""Embedding network: torchvision backbone (no pretrained weights), one input channel,
projection head, L2-normalised output. Network code only; the Lightning wrapper lives apart."""

from __future__ import annotations

from typing import cast

import torch
import torch.nn as nn
import torch.nn.functional as F

from surrogate.augment.orientation import canonicalise
from surrogate.errors import ConfigError

__all__ = ["BACKBONES", "EmbeddingNet"]

#: torchvision architectures accepted as backbones (all built with ``weights=None``).
BACKBONES = (
    "resnet18",
    "resnet34",
    "resnet50",
    "convnext_tiny",
    "efficientnet_b0",
    "mobilenet_v3_small",
    "mobilenet_v3_large",
    "shufflenet_v2_x0_5",
    "shufflenet_v2_x1_0",
    "regnet_x_400mf",
    "regnet_y_400mf",
)


#: a Conv2d's kernel size, stride, padding and dilation (stored as ``tuple[int, ...]``, always two long).
_Pair = tuple[int, int]


def _one_channel(net: nn.Module) -> nn.Module:
    """Replace the first 3-channel convolution by a 1-channel one (same shape otherwise)."""
    for name, conv in net.named_modules():
        if isinstance(conv, nn.Conv2d) and conv.in_channels == 3:
            parent_name, _, attr = name.rpartition(".")
            parent = net.get_submodule(parent_name) if parent_name else net
            setattr(
                parent,
                attr,
                nn.Conv2d(
                    1,
                    conv.out_channels,
                    cast(_Pair, conv.kernel_size),
                    cast(_Pair, conv.stride),
                    cast("str | _Pair", conv.padding),
                    cast(_Pair, conv.dilation),
                    conv.groups,
                    conv.bias is not None,
                ),
            )
            return net
    raise ConfigError("backbone has no 3-channel input convolution to adapt")


def _strip_classifier(net: nn.Module, backbone: str) -> int:
    """Replace the classifier's last Linear by the identity; returns the feature width."""
    if backbone.startswith(("resnet", "shufflenet", "regnet")):
        features = cast(nn.Linear, net.fc).in_features
        net.fc = nn.Identity()
        return features
    head = cast(nn.Sequential, net.classifier)
    if backbone.startswith("mobilenet_v3"):  # pooled features -> Linear -> Hardswish -> Dropout -> Linear
        features = cast(nn.Linear, head[0]).in_features
        net.classifier = nn.Identity()
        return features
    features = cast(nn.Linear, head[-1]).in_features  # convnext / efficientnet: classifier ends in a Linear
    head[-1] = nn.Identity()
    return features


class EmbeddingNet(nn.Module):
    """[Canonical rotation ->] resize -> backbone -> global pooling -> MLP projection -> unit vector.

    Parameters
    ----------
    backbone
        One of :data:`BACKBONES` (torchvision, ``weights=None``: nothing is downloaded).
    dim
        Embedding dimension.
    hidden
        Width of the projection head's hidden layer.
    input_size
        Side [px] the input is resized to (area-averaged) before the backbone; ``None`` keeps it.
        Library images are 128 px at 0.2 Å/px; 64 px (0.4 Å/px) still resolves CdTe dumbbells
        and costs a quarter of the compute.
    bn_momentum
        Momentum of every BatchNorm's running statistics (training only; not part of ``config``).
        torchvision builds MobileNetV3 and EfficientNet with 0.01: from scratch their running
        statistics then lag the weights for hundreds of steps, and in eval mode (validation,
        inference) every image embeds to the same vector meanwhile (measured: cosine 1.0000 between
        32 different library images at initialisation, 0.60 with batch statistics). 0.1 (PyTorch's
        default) catches up in tens of steps; ``None`` keeps the backbone's own.
    canonical
        Rotate every input to its lattice frame first (:func:`surrogate.augment.orientation.canonicalise`:
        strongest reflection along +x), so that the network meets a few discrete orientations
        instead of every rotation. Part of the network (and of its checkpoint's ``config``): the
        library, the queries and the training views all pass through it.
    """

    def __init__(
        self,
        backbone: str = "resnet18",
        dim: int = 128,
        hidden: int = 512,
        input_size: int | None = None,
        bn_momentum: float | None = 0.1,
        canonical: bool = False,
    ):
        super().__init__()
        import torchvision.models as tvm

        if backbone not in BACKBONES:
            raise ConfigError(f"unknown backbone {backbone!r}: choose one of {', '.join(BACKBONES)}")
        if input_size is not None and input_size < 32:
            raise ConfigError(f"input_size must be >= 32 px (the backbones downsample by 32), got {input_size}")
        net = getattr(tvm, backbone)(weights=None)
        _one_channel(net)
        if bn_momentum is not None:
            for m in net.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.momentum = float(bn_momentum)
        features = _strip_classifier(net, backbone)
        self.backbone, self.dim = net, dim
        self.input_size = None if input_size is None else int(input_size)
        self.head = nn.Sequential(nn.Linear(features, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, dim))
        self.canonical = bool(canonical)
        self.config = {
            "backbone": backbone,
            "dim": int(dim),
            "hidden": int(hidden),
            "input_size": self.input_size,
            "canonical": self.canonical,
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 1:
            raise ValueError(f"expected a (B, 1, H, W) batch, got {tuple(x.shape)}")
        if self.canonical:
            x = canonicalise(x)
        if self.input_size is not None and tuple(x.shape[-2:]) != (self.input_size, self.input_size):
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="area")
        return F.normalize(self.head(self.backbone(x)).float(), dim=1)
