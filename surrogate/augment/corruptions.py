"""Batched, device-agnostic corruptions that turn a clean simulated image into a plausible
experimental one. Every op takes and returns ``(B, 1, H, W)`` float tensors on any device and
draws its parameters per image from a ``torch.Generator``.

Order (as in a microscope): geometry (rotation, flip, scale, translation, drift/shear, scan line
jitter) -> optics (source-size blur) -> counting noise at a dose -> detector (read noise,
background ramp, contrast/gamma) -> standardisation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["Corrupt"]


def _uniform(g, n, low, high, device):
    return low + (high - low) * torch.rand(n, generator=g, device=device)


@dataclass
class Corrupt:
    """Random experimental corruption.

    Attributes
    ----------
    sampling
        Pixel size of the input [Å] (the library's canonical sampling).
    rotation
        Maximum |rotation| [deg] (180 = any).
    flip
        Random horizontal flip.
    scale
        Relative magnification range, e.g. 0.2 for ±20 %.
    translate
        Maximum shift as a fraction of the field.
    drift
        Maximum shear from sample drift during the scan (fraction).
    jitter
        RMS scan-line jitter [px].
    blur
        Range of Gaussian source-size blur [Å] (standard deviation).
    dose
        Log-uniform dose range [e/Å²]; ``None`` for noise-free.
    signal
        Range of the mean detected fraction used to convert a standardised image into counts.
    read_noise
        Gaussian read-noise standard deviation relative to the image's standard deviation.
    background
        Maximum amplitude of a linear background ramp (relative).
    gamma
        Range of the contrast exponent.
    """

    sampling: float = 0.2
    rotation: float = 180.0
    flip: bool = True
    scale: float = 0.2
    translate: float = 0.1
    drift: float = 0.03
    jitter: float = 0.5
    blur: tuple[float, float] = (0.0, 0.5)
    dose: tuple[float, float] | None = (1e2, 1e5)
    signal: tuple[float, float] = (0.01, 0.2)
    read_noise: float = 0.05
    background: float = 0.2
    gamma: tuple[float, float] = (0.8, 1.25)

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 1:
            raise ValueError(f"expected a (B, 1, H, W) batch, got {tuple(x.shape)}")
        g = generator
        b, _, h, w = x.shape
        dev = x.device
        x = x.float()
        x = self.geometry(x, g)
        x = self.blur_op(x, g)
        x = self.noise(x, g)
        lo, hi = self.gamma
        x = x - x.amin(dim=(2, 3), keepdim=True)
        x = x / x.amax(dim=(2, 3), keepdim=True).clamp_min(1e-12)
        x = x ** _uniform(g, b, lo, hi, dev).view(b, 1, 1, 1)
        yy, xx = torch.meshgrid(
            torch.linspace(-1, 1, h, device=dev), torch.linspace(-1, 1, w, device=dev), indexing="ij"
        )
        ramp = _uniform(g, b, -1, 1, dev).view(b, 1, 1, 1) * xx + _uniform(g, b, -1, 1, dev).view(b, 1, 1, 1) * yy
        x = x + self.background * ramp
        return (x - x.mean(dim=(2, 3), keepdim=True)) / x.std(dim=(2, 3), keepdim=True).clamp_min(1e-6)

    def geometry(self, x, g):
        b, _, h, w = x.shape
        dev = x.device
        angle = _uniform(g, b, -self.rotation, self.rotation, dev) * math.pi / 180
        s = 1 + _uniform(g, b, -self.scale, self.scale, dev)
        flip = (
            torch.where(torch.rand(b, generator=g, device=dev) < 0.5, -1.0, 1.0)
            if self.flip
            else torch.ones(b, device=dev)
        )
        shear = _uniform(g, b, -self.drift, self.drift, dev)
        cos, sin = torch.cos(angle) / s, torch.sin(angle) / s
        theta = torch.zeros(b, 2, 3, device=dev)
        theta[:, 0, 0], theta[:, 0, 1] = cos * flip, -sin + shear
        theta[:, 1, 0], theta[:, 1, 1] = sin * flip, cos
        theta[:, :, 2] = _uniform(g, 2 * b, -self.translate, self.translate, dev).view(b, 2) * 2
        grid = F.affine_grid(theta, x.shape, align_corners=False)
        if self.jitter > 0:  # each scan line (row) shifted along x
            shift = torch.randn(b, h, generator=g, device=dev) * self.jitter * 2 / w
            grid[..., 0] = grid[..., 0] + shift[:, :, None]
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)

    def blur_op(self, x, g):
        b, _, h, w = x.shape
        sigma = _uniform(g, b, *self.blur, x.device) / self.sampling  # [px]
        ky = torch.fft.fftfreq(h, device=x.device)[:, None]
        kx = torch.fft.rfftfreq(w, device=x.device)[None, :]
        k2 = kx**2 + ky**2
        otf = torch.exp(-2 * math.pi**2 * sigma.view(b, 1, 1, 1) ** 2 * k2)
        return torch.fft.irfft2(torch.fft.rfft2(x) * otf, s=(h, w))

    def noise(self, x, g):
        b = x.shape[0]
        dev = x.device
        if self.dose is not None:
            lo, hi = math.log(self.dose[0]), math.log(self.dose[1])
            dose = torch.exp(_uniform(g, b, lo, hi, dev)).view(b, 1, 1, 1)
            frac = _uniform(g, b, *self.signal, dev).view(b, 1, 1, 1)
            x = x - x.amin(dim=(2, 3), keepdim=True)
            x = x / x.mean(dim=(2, 3), keepdim=True).clamp_min(1e-12) * frac  # detected fraction
            electrons = dose * self.sampling**2
            x = torch.poisson(x * electrons, generator=g) / electrons
        std = x.std(dim=(2, 3), keepdim=True).clamp_min(1e-12)
        return x + self.read_noise * std * torch.randn(x.shape, generator=g, device=dev)


def rotate_scale(images, rotation, scale=1.0):
    """Rotate by ``rotation`` [deg] (counter-clockwise) and magnify by ``scale`` about the centre,
    with the same bilinear sampling and reflection padding as :meth:`Corrupt.geometry`.

    ``images`` is ``(N, H, W)`` (numpy or torch); ``rotation`` and ``scale`` are scalars or one value
    per image. Returns the same type as the input (float32).
    """
    import numpy as np

    as_numpy = not isinstance(images, torch.Tensor)
    x = torch.as_tensor(np.asarray(images, np.float32) if as_numpy else images).float()
    squeeze = x.ndim == 2
    if squeeze:
        x = x[None]
    b = x.shape[0]
    angle = torch.as_tensor(rotation, dtype=torch.float32, device=x.device).expand(b) * math.pi / 180
    s = torch.as_tensor(scale, dtype=torch.float32, device=x.device).expand(b)
    theta = torch.zeros(b, 2, 3, device=x.device)
    theta[:, 0, 0], theta[:, 0, 1] = torch.cos(angle) / s, -torch.sin(angle) / s
    theta[:, 1, 0], theta[:, 1, 1] = torch.sin(angle) / s, torch.cos(angle) / s
    grid = F.affine_grid(theta, (b, 1, *x.shape[-2:]), align_corners=False)
    out = F.grid_sample(x[:, None], grid, mode="bilinear", padding_mode="reflection", align_corners=False)[:, 0]
    out = out[0] if squeeze else out
    return out.numpy() if as_numpy else out
