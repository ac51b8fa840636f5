"""Lattice frame of an image: rotation (and mirror) to a canonical orientation.

A crystal image's strongest Bragg reflection fixes its in-plane orientation up to the lattice's
point symmetry. :func:`lattice_frame` finds that reflection in the windowed power spectrum
(inside a band of lattice frequencies, refined to sub-pixel by the power-weighted centroid of its
5 x 5 neighbourhood), tells it from its Friedel mate by the bispectrum's phase, and fixes the
mirror by the side of the next strongest reflection; :func:`canonicalise` turns every image into
that frame. Any rotation or mirror image of the same picture then maps to one of a few discrete
frames (near-equal reflections that the image's symmetry does not relate) instead of a continuum,
which the embedding network would otherwise have to learn from examples. Measured on the demo
library under the training corruptions (any rotation, ±20 % scale, dose 10^2-10^5 e/Å²): 58-63 %
of images land within 3° of the clean image's orientation, at every dose.

Batched torch on any device; the angle carries no gradient (the rotation does).
"""

from __future__ import annotations

import torch

__all__ = ["lattice_frame", "lattice_orientation", "lattice_signature", "canonicalise", "BAND"]

#: Default frequency band [cycles/px] searched for the reflection: at the library's 0.2 Å/px,
#: spacings from 5.7 Å down to 0.8 Å (every low-index reflection of the library's crystals).
BAND = (0.035, 0.25)


def lattice_frame(x: torch.Tensor, band: tuple[float, float] = BAND, min_separation: float = 20.0):
    """The canonical frame of each image of ``x`` ``(B, 1, H, W)``: ``(angle, mirror)``.

    ``angle`` [deg, 0-360) is the direction of the strongest reflection ``g1`` (measured from +x
    towards +y, i.e. rows), refined by its power-weighted 5 x 5 centroid; ``g1`` and ``-g1`` are told
    apart by the sign of the imaginary part of the bispectrum ``F(g1) F(g2) F*(g1 + g2)`` (translation
    invariant, conjugated by a 180° turn; real for a centrosymmetric projection, where the turn
    changes nothing), ``g2`` being the strongest reflection more than ``min_separation`` degrees
    from ``g1``, taken at an acute angle to it. ``mirror`` is true where ``g2`` lies clockwise of
    ``g1``. Rotating by ``angle`` (:func:`surrogate.augment.corruptions.rotate_scale` convention)
    and then reversing the rows where ``mirror`` gives the canonical image (:func:`canonicalise`).
    """
    return _reflections(x, band, min_separation)[:2]


def _reflections(x: torch.Tensor, band: tuple[float, float], min_separation: float):
    """(angle, mirror, g1, g2): the frame of :func:`lattice_frame` and the centroids (k_y, k_x)
    [cycles/px] of its two reflections, each a ``(B, 2)`` tensor."""
    if x.ndim != 4 or x.shape[1] != 1:
        raise ValueError(f"expected a (B, 1, H, W) batch, got {tuple(x.shape)}")
    with torch.no_grad():
        b, _, h, w = x.shape
        dev = x.device
        x = x.float()
        window = torch.outer(
            torch.hann_window(h, periodic=False, device=dev), torch.hann_window(w, periodic=False, device=dev)
        )
        spectrum = torch.fft.fftshift(torch.fft.fft2((x - x.mean(dim=(2, 3), keepdim=True)) * window), dim=(-2, -1))[
            :, 0
        ]
        power = spectrum.abs() ** 2
        oy, ox = torch.meshgrid(
            torch.arange(h, device=dev) - h // 2, torch.arange(w, device=dev) - w // 2, indexing="ij"
        )
        ky, kx = oy / h, ox / w
        radius = torch.sqrt(kx**2 + ky**2)
        inside = (radius > band[0]) & (radius < band[1])
        rows_b = torch.arange(b, device=dev)
        peak = torch.where(inside, power, torch.zeros((), device=dev)).flatten(1).argmax(dim=1)
        iy, ix = peak // w, peak % w
        cy, cx = _centroid(power, iy, ix, ky, kx)
        first = torch.rad2deg(torch.atan2(cy, cx)) % 180.0  # g1 up to its sign
        g1 = torch.stack([oy[iy, ix], ox[iy, ix]], 1)  # integer offsets (row, col)
        along = g1[:, 0] * torch.sin(torch.deg2rad(first)) + g1[:, 1] * torch.cos(torch.deg2rad(first))
        g1 = torch.where((along < 0)[:, None], -g1, g1)  # the one pointing along `first`
        # second reflection: strongest beyond min_separation (mod 180°); its side fixes the mirror
        rel = (torch.rad2deg(torch.atan2(ky, kx))[None] - first[:, None, None] + 90.0) % 180.0 - 90.0  # (B, H, W)
        j = (
            torch.where(inside[None] & (rel.abs() > min_separation), power, torch.zeros((), device=dev))
            .flatten(1)
            .argmax(dim=1)
        )
        g2 = torch.stack([oy.flatten()[j], ox.flatten()[j]], 1)
        g2 = torch.where(((g1 * g2).sum(1) < 0)[:, None], -g2, g2)  # at an acute angle to g1
        g3 = g1 + g2

        def at(g):
            return spectrum[rows_b, (g[:, 0] + h // 2).clamp(0, h - 1), (g[:, 1] + w // 2).clamp(0, w - 1)]

        turn = (at(g1) * at(g2) * at(g3).conj()).imag < 0
        angle = (first + torch.where(turn, 180.0, 0.0)) % 360.0
        mirror = rel.flatten(1).gather(1, j[:, None])[:, 0] < 0
        c2y, c2x = _centroid(power, j // w, j % w, ky, kx)
        return angle, mirror, torch.stack([cy, cx], 1), torch.stack([c2y, c2x], 1)


def _centroid(power, iy, ix, ky, kx):
    """Power-weighted centroid (k_y, k_x) [cycles/px] of the 5 x 5 neighbourhood of pixel (iy, ix)
    of each spectrum of ``power`` ``(B, H, W)`` (clamped to the array)."""
    b, h, w = power.shape
    rows_b = torch.arange(b, device=power.device)
    offs = torch.arange(-2, 3, device=power.device)
    rows = (iy[:, None] + offs[None]).clamp(0, h - 1)  # (B, 5)
    cols = (ix[:, None] + offs[None]).clamp(0, w - 1)
    patch = power[rows_b[:, None, None], rows[:, :, None], cols[:, None, :]]  # (B, 5, 5)
    total = patch.sum(dim=(1, 2)).clamp_min(1e-30)
    cy = (patch * ky[rows, 0][:, :, None]).sum(dim=(1, 2)) / total
    cx = (patch * kx[0, cols][:, None, :]).sum(dim=(1, 2)) / total
    return cy, cx


def lattice_signature(x: torch.Tensor, band: tuple[float, float] = BAND, min_separation: float = 20.0):
    """Scale-bearing lattice signature of each image of ``x`` ``(B, 1, H, W)``: ``(d1, d2, angle)``,
    the spacings [px] of the two reflections of :func:`lattice_frame` (the strongest, and the
    strongest more than ``min_separation`` degrees from it) and the acute angle [deg] between them.
    Unlike the frame it changes with magnification: with a known pixel size it tells lattices of
    another size (another material, a wrong pixel size) from the library's."""
    _, _, g1, g2 = _reflections(x, band, min_separation)
    k1, k2 = g1.norm(dim=1), g2.norm(dim=1)
    cos = (g1 * g2).sum(1).abs() / (k1 * k2).clamp_min(1e-30)
    return 1.0 / k1, 1.0 / k2, torch.rad2deg(torch.arccos(cos.clamp(0.0, 1.0)))


def lattice_orientation(x: torch.Tensor, band: tuple[float, float] = BAND) -> torch.Tensor:
    """Angle [deg, 0-180) of the strongest reflection of each image of ``x`` ``(B, 1, H, W)``
    (the direction of :func:`lattice_frame`, up to the 180° turn)."""
    return lattice_frame(x, band)[0] % 180.0


def canonicalise(x: torch.Tensor, band: tuple[float, float] = BAND) -> torch.Tensor:
    """Rotate (and mirror) each image of ``x`` ``(B, 1, H, W)`` into its :func:`lattice_frame`:
    strongest reflection along +x, the next at a positive angle, the bispectrum's phase positive;
    bilinear, reflection padding, as the training corruptions. What stays undetermined is the
    choice between near-equal reflections that are not related by the image's symmetry."""
    from surrogate.augment.corruptions import rotate_scale

    angle, mirror = lattice_frame(x, band)
    turned = rotate_scale(x[:, 0], angle)[:, None]
    # reversing the rows after the turn = sampling the input at R · diag(1, -1) (align_corners=False)
    return torch.where(mirror[:, None, None, None], turned.flip(-2), turned).to(x.dtype)
