"""Imaging conditions: one frozen dataclass per image, and a sampler over configured ranges."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import numpy as np

from surrogate.errors import ConfigError

__all__ = ["MODES", "METHODS", "ImagingConditions", "sample_conditions", "wavelength"]

#: Image modes: STEM detectors and conventional HRTEM.
MODES = ("haadf", "abf", "bf", "hrtem")
#: Simulation methods. ``incoherent`` is the fast projected-potential x probe-intensity model.
METHODS = ("multislice", "prism", "incoherent")

#: Detector ranges [mrad] used when a condition does not give its own.
DEFAULT_DETECTORS = {"haadf": (70.0, 200.0), "abf": (11.0, 22.0), "bf": (0.0, 10.0)}


def wavelength(energy: float) -> float:
    """Relativistic electron wavelength [Å] at ``energy`` [eV]."""
    from ase.units import _c, _e, _hplanck, _me

    e = energy * _e
    return _hplanck * _c / np.sqrt(e * (2 * _me * _c**2 + e)) * 1e10


@dataclass(frozen=True)
class ImagingConditions:
    """Everything that turns a structure into one image.

    Attributes
    ----------
    mode
        ``haadf``, ``abf``, ``bf`` (STEM) or ``hrtem``.
    method
        ``multislice``, ``prism`` (STEM only) or ``incoherent`` (HAADF only).
    energy
        Beam energy [eV].
    semiangle
        Probe convergence semi-angle (STEM) or objective aperture (HRTEM) [mrad].
    defocus
        Defocus [Å] (abTEM convention: positive is underfocus).
    cs
        Spherical aberration C30 [Å].
    inner, outer
        Detector collection angles [mrad] (STEM).
    source_size
        Gaussian source size (STEM) or image spread (HRTEM), standard deviation [Å].
    focal_spread
        Focal spread for HRTEM partial temporal coherence [Å].
    sampling
        Output pixel size [Å/px] (the library's canonical sampling).
    dose
        Electron dose [e/Å²]; ``None`` stores the noise-free image.
    rotation, scale
        In-plane rotation [deg] and magnification applied after simulation (queries and
        augmentation; the library renders at 0 and 1).
    seed
        Seed of the noise draw.
    thickness
        Specimen thickness the image is taken at [Å]: the structure's first ``thickness`` Å along
        the beam (the exit plane nearest to it for multislice and HRTEM, the atoms above it for the
        incoherent mode and PRISM). ``None`` (and any value beyond the structure) is the whole
        structure, as in libraries written before thickness became a condition.
    """

    mode: str = "haadf"
    method: str = "incoherent"
    energy: float = 200e3
    semiangle: float = 20.0
    defocus: float = 0.0
    cs: float = 0.0
    inner: float = 70.0
    outer: float = 200.0
    source_size: float = 0.0
    focal_spread: float = 0.0
    sampling: float = 0.2
    dose: float | None = None
    rotation: float = 0.0
    scale: float = 1.0
    seed: int = 0
    thickness: float | None = None

    def __post_init__(self):
        if self.mode not in MODES:
            raise ConfigError(f"unknown imaging mode {self.mode!r}: choose one of {', '.join(MODES)}")
        if self.method not in METHODS:
            raise ConfigError(f"unknown simulation method {self.method!r}: choose one of {', '.join(METHODS)}")
        if self.method == "incoherent" and self.mode != "haadf":
            raise ConfigError(
                f"the incoherent method models HAADF only, not {self.mode}: use method=multislice or prism"
            )
        if self.mode == "hrtem" and self.method == "prism":
            raise ConfigError("HRTEM uses plane-wave multislice: set method=multislice for mode=hrtem")
        if self.energy <= 0 or self.sampling <= 0 or self.semiangle <= 0:
            raise ConfigError("energy, sampling and semiangle must be positive")
        if self.mode != "hrtem" and not (0 <= self.inner < self.outer):
            raise ConfigError(f"detector inner angle {self.inner} must be below outer {self.outer} [mrad]")
        if self.dose is not None and self.dose <= 0:
            raise ConfigError(f"dose must be positive [e/Å²], got {self.dose}")
        if self.thickness is not None and not self.thickness > 0:
            raise ConfigError(f"thickness must be positive [Å] or null (the whole structure), got {self.thickness}")

    @property
    def wavelength(self) -> float:
        """Electron wavelength [Å]."""
        return wavelength(self.energy)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ImagingConditions":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ConfigError(f"unknown imaging-condition keys {sorted(unknown)}: valid keys are {sorted(names)}")
        return cls(**d)

    @classmethod
    def from_json(cls, s: str) -> "ImagingConditions":
        return cls.from_dict(json.loads(s))

    def key(self) -> str:
        """Content hash of the conditions (16 hex characters)."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:16]

    def replace(self, **changes) -> "ImagingConditions":
        return dataclasses.replace(self, **changes)

    # Groups of conditions that share one expensive pass per structure
    def probe_key(self) -> tuple:
        """Conditions sharing this key share one expensive pass per structure.

        HRTEM: one exit wave per energy (every objective aperture, defocus, Cs and focal spread is
        a CTF applied to it). PRISM: one S-matrix per energy, its cutoff the widest convergence
        angle of the group (every probe within it is a reduction). Incoherent: one projected
        potential for everything. Multislice: one scan per probe (all detectors from it).
        """
        if self.mode == "hrtem":
            return ("hrtem", self.energy)
        if self.method == "prism":
            return ("prism", self.energy)
        if self.method == "incoherent":
            return ("incoherent",)
        return (self.method, self.energy, self.semiangle, self.defocus, self.cs)


def _draw(rng: np.random.Generator, spec, name: str, log: bool = False):
    """Draw a value from a spec: a scalar, a [low, high] range, or {choices: [...]}."""
    if spec is None or isinstance(spec, (int, float, str)):
        return spec
    if isinstance(spec, Mapping):
        if "choices" in spec:
            choices = list(spec["choices"])
            if not choices:
                raise ConfigError(f"empty choices for {name}: give at least one value")
            return choices[int(rng.integers(len(choices)))]
        low, high = spec.get("low"), spec.get("high")
        log = bool(spec.get("log", log))
    else:
        seq = list(spec)
        if len(seq) != 2:
            raise ConfigError(f"range for {name} must be [low, high], got {seq}")
        low, high = seq
    if low is None or high is None or high < low:
        raise ConfigError(f"empty range for {name}: [{low}, {high}]; give low <= high")
    if low == high:
        return float(low)
    if log:
        if low <= 0:
            raise ConfigError(f"log range for {name} needs low > 0")
        return float(np.exp(rng.uniform(np.log(low), np.log(high))))
    return float(rng.uniform(low, high))


def sample_conditions(
    n: int,
    ranges: Mapping[str, Any],
    modes: Iterable[Mapping[str, Any]],
    seed: int = 0,
    sampling: float = 0.2,
) -> list[ImagingConditions]:
    """Draw ``n`` imaging conditions.

    Parameters
    ----------
    n
        Number of conditions.
    ranges
        Per-field spec shared by all modes: scalar, ``[low, high]`` (uniform), ``{low, high, log}``
        or ``{choices: [...]}``. Fields: energy, semiangle, defocus, cs, source_size, focal_spread,
        dose (log-uniform), thickness [Å] (drawn per image; absent = the whole structure), and
        per-mode detector ranges under ``detectors.<mode>``.
    modes
        List of ``{mode, method, weight}``; each condition picks a mode with probability
        proportional to its weight.
    seed
        Seed; the same seed gives the same conditions.
    """
    modes = list(modes)
    if n < 0:
        raise ConfigError(f"number of conditions must be >= 0, got {n}")
    if not modes:
        raise ConfigError("no imaging modes configured: give at least one {mode, method} in simulate.modes")
    for m in modes:
        if m.get("mode") not in MODES:
            raise ConfigError(f"unknown imaging mode {m.get('mode')!r}: choose one of {', '.join(MODES)}")
    weights = np.array([float(m.get("weight", 1.0)) for m in modes])
    if (weights < 0).any() or weights.sum() <= 0:
        raise ConfigError("mode weights must be non-negative and not all zero")
    weights = weights / weights.sum()
    rng = np.random.default_rng(seed)
    detectors = dict(ranges.get("detectors", {}) or {})
    out = []
    for i in range(n):
        m = modes[int(rng.choice(len(modes), p=weights))]
        mode = m["mode"]
        values = {"mode": mode, "method": m.get("method", "multislice"), "sampling": sampling}
        for name in ("energy", "semiangle", "defocus", "cs", "source_size", "focal_spread"):
            if name in ranges and ranges[name] is not None:
                values[name] = _draw(rng, ranges[name], name)
        if mode == "hrtem":
            values.update(_draw_hrtem(rng, ranges, values))
        else:
            inner, outer = DEFAULT_DETECTORS[mode]
            det = detectors.get(mode)
            if det is not None:
                inner = _draw(rng, det.get("inner", inner), f"detectors.{mode}.inner")
                outer = _draw(rng, det.get("outer", outer), f"detectors.{mode}.outer")
            values.update(inner=inner, outer=outer)
        if ranges.get("dose") is not None:
            values["dose"] = _draw(rng, ranges["dose"], "dose", log=True)
        values["seed"] = int(seed * 1_000_003 + i)
        if ranges.get("thickness") is not None:  # drawn last: configs without it draw what they drew before
            values["thickness"] = _draw(rng, ranges["thickness"], "thickness")
        out.append(ImagingConditions(**values))
    return out


def _draw_hrtem(rng, ranges, values) -> dict:
    """HRTEM uses its own defocus/aperture ranges when given (``hrtem.defocus`` ...)."""
    extra = {}
    for name, spec in (ranges.get("hrtem", {}) or {}).items():
        extra[name] = _draw(rng, spec, f"hrtem.{name}")
    return extra
