"""Typed settings of the inference stages: the only home of their defaults.

Each stage of :func:`surrogate.inference.pipeline.run_inference` takes one dataclass:

=====================  =======================  ===========================================
config key             class                    stage
=====================  =======================  ===========================================
(top level)            :class:`InferenceSettings`  reading (pixel size, channel, frame, roi), matcher
``preprocess``         :class:`PreprocessSettings`  resample, denoise, cut into windows
``retrieval``          :class:`RetrievalSettings`   window matching and aggregation
``lattice_check``      :class:`LatticeSettings`     lattice spacings against the known pixel size
``boundary_check``     :class:`BoundarySettings`    grains and misorientation measured on the columns
``rank``               :class:`RankSettings`        image distance + energy, Pareto front
``refine``             :class:`RefineSettings`      fit of the top candidates to the image
=====================  =======================  ===========================================

The same classes are the Hydra schema of ``infer.yaml`` (registered in Hydra's ConfigStore as
``infer_schema``), so a typo or a wrong type is refused when the command line is composed, and
:meth:`InferenceSettings.from_config` turns a config (or a plain dict of overrides) into the
objects the stages take. Values that no type can refuse (a negative ``k``, an unknown mode) are
checked in ``__post_init__`` with a one-line :class:`~surrogate.errors.ConfigError` naming the key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, List, Optional, TypeVar

from surrogate.errors import ConfigError

__all__ = [
    "PreprocessSettings",
    "RetrievalSettings",
    "LatticeSettings",
    "BoundarySettings",
    "RankSettings",
    "RefineSettings",
    "InferenceSettings",
    "InferConfig",
    "METHODS",
    "register",
]

#: Matchers: the CNN embedding + FAISS, and the classical baselines.
METHODS = ("cnn", "sift", "hog", "spectrum")


def _choice(key: str, value: Any, options) -> None:
    if value not in options:
        raise ConfigError(f"{key}={value!r}: use {' | '.join(str(o) for o in options)}")


def _at_least(key: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{key}={value!r} must be an integer")
    if value < low:
        raise ConfigError(f"{key}={value} must be >= {low}")


@dataclass
class PreprocessSettings:
    """Resampling to the library's canonical sampling, denoising and windowing."""

    denoise: str = "gaussian"  # none | gaussian | nlmeans
    stride: Optional[int] = None  # window stride [px]; default half a window

    def __post_init__(self):
        _choice("preprocess.denoise", self.denoise, ("none", "gaussian", "nlmeans"))
        if self.stride is not None:
            _at_least("preprocess.stride", self.stride, 1)


@dataclass
class RetrievalSettings:
    """Which library images each window is matched against, and how many."""

    k: int = 10  # distinct configurations matched per window
    candidates: int = 10  # configurations kept for ranking
    elements: Optional[List[str]] = None  # what the sample is made of, e.g. [Cd,Te,Se,Cl]
    mode: Optional[str] = None  # imaging mode of the image: haadf | abf | bf | hrtem
    threshold: Optional[float] = None  # out-of-library distance; default: the index calibration
    vote_temperature: float = 0.02  # distance scale of the class votes: weight exp(-(d - d_min) / T)

    def __post_init__(self):
        from ase.data import chemical_symbols

        from surrogate.simulate.conditions import MODES

        _at_least("retrieval.k", self.k, 1)
        _at_least("retrieval.candidates", self.candidates, 1)
        if self.elements is not None:
            unknown = {str(e) for e in self.elements} - set(chemical_symbols)
            if unknown:
                raise ConfigError(f"retrieval.elements: unknown element(s) {sorted(unknown)}; use symbols like [Cd,Te]")
        if not float(self.vote_temperature) > 0:
            raise ConfigError(f"retrieval.vote_temperature={self.vote_temperature} must be > 0 (a distance)")
        if self.mode is not None and self.mode not in MODES:
            raise ConfigError(f"retrieval.mode={self.mode!r}: choose one of {', '.join(MODES)} (or null for all)")

    @property
    def allowed(self) -> set[str] | None:
        return {str(e) for e in self.elements} if self.elements else None


@dataclass
class LatticeSettings:
    """The lattice-spacing check (:mod:`surrogate.inference.lattice`)."""

    mode: str = "rerank"  # rerank (consistent candidates first) | flag (only flag) | off
    tolerance: float = (
        0.10  # relative spacing error within which a candidate's lattice is the image's (Si vs CdTe: 0.17)
    )

    def __post_init__(self):
        _choice("lattice_check.mode", self.mode, ("rerank", "flag", "off"))
        if not float(self.tolerance) > 0:
            raise ConfigError(
                f"lattice_check.tolerance={self.tolerance} must be > 0 (a relative spacing error, e.g. 0.1)"
            )


@dataclass
class BoundarySettings:
    """The grain / misorientation check (:mod:`surrogate.inference.misorientation`)."""

    mode: str = "rerank"  # rerank (candidates of the measured family and misorientation first) | flag | off
    tolerance: float = 2.5  # largest misorientation difference of an agreeing boundary candidate [deg]
    max_field: float = 100.0  # side of the central square measured [Å] (bounds the time on large scans)
    build: int = 2  # boundaries built (inference.propose) when the library holds none agreeing; 0: none
    max_templates: int = 12  # lattices tried (the candidates', then the library's); the best-fitting one is measured

    def __post_init__(self):
        _choice("boundary_check.mode", self.mode, ("rerank", "flag", "off"))
        if not float(self.tolerance) > 0:
            raise ConfigError(f"boundary_check.tolerance={self.tolerance} must be > 0 [deg], e.g. 2.5")
        if not float(self.max_field) >= 10:
            raise ConfigError(f"boundary_check.max_field={self.max_field} must be >= 10 [Å], e.g. 100")
        _at_least("boundary_check.build", self.build, 0)
        _at_least("boundary_check.max_templates", self.max_templates, 1)


@dataclass
class RankSettings:
    """Image distance against energy."""

    energy_weight: float = 1.0  # distance per eV/atom above the lowest candidate of the same kind and elements
    boundary_weight: float = 0.1  # distance per J/m^2 of boundary energy above the lowest boundary candidate (any kind)


@dataclass
class RefineSettings:
    """The fit of the top candidates to one window of the image (:mod:`surrogate.inference.refine`)."""

    top: int = 3  # candidates refined, then ordered by their score (0 = none)
    window: str = "top"  # top (the top candidate's) | boundary (straddles two lattices) | an index
    potential_sampling: float = 0.08  # [Å] projected-potential sampling of the refinement simulations
    defocus_steps: List[float] = field(default_factory=lambda: [-30.0, 30.0])  # [Å] tried around the library's
    max_evals: int = 300  # Nelder-Mead evaluations of each registration stage
    relax: bool = True  # relax the first relax_top candidates with the potential (fixed cell), re-simulate, re-fit
    relax_top: int = 1  # candidates relaxed (the first ones refined; each costs relax_steps potential calls)
    relax_steps: int = 60  # largest number of optimiser steps of a relaxation (FIRE, fmax 0.05 eV/Å)
    relax_max_atoms: int = 3000  # larger structures are not relaxed (the cost grows with the atoms; said in the record)
    potential: Optional[str] = (
        None  # potential checkpoint for relax; default: the ones that gave the library its energies
    )
    final_method: Optional[str] = None  # re-simulate the final image with multislice | prism (slow on CPU)
    score: str = "fom"  # fom (0.1 x shift + 1 - SSIM) | residual (1 - R^2: sharper for point defects) | columns
    shared_pose: bool = False  # fit the first candidate of each material + zone axis, score its siblings at its pose
    columns: bool = True  # measure the window's atom columns and score each refined candidate on them
    column_tolerance: float = 0.3  # [Å] a model column within this of a measured one explains it
    grains: bool = True  # bicrystals: fit each grain's pose on the columns (rotation, strain, shift, boundary)
    search: int = 0  # bicrystals whose columns still fit badly: simulations for a local search of nearby boundaries
    search_below: float = 0.9  # run the local search when the column fraction is below this

    def __post_init__(self):
        _at_least("refine.top", self.top, 0)
        _at_least("refine.max_evals", self.max_evals, 1)
        _at_least("refine.relax_top", self.relax_top, 0)
        _at_least("refine.relax_steps", self.relax_steps, 0)
        _at_least("refine.relax_max_atoms", self.relax_max_atoms, 1)
        _choice("refine.score", self.score, ("fom", "residual", "columns"))
        _at_least("refine.search", self.search, 0)
        if not float(self.column_tolerance) > 0:
            raise ConfigError(f"refine.column_tolerance={self.column_tolerance} must be > 0 [Å]")
        if self.score == "columns" and not self.columns:
            raise ConfigError("refine.score=columns needs refine.columns=true")
        if self.final_method is not None:
            _choice("refine.final_method", self.final_method, ("multislice", "prism"))
        if str(self.window) not in ("top", "boundary"):
            try:
                if int(self.window) < 0:
                    raise ValueError
            except (TypeError, ValueError):
                raise ConfigError(f"refine.window={self.window!r}: use top, boundary or a window index") from None
        if not float(self.potential_sampling) > 0:
            raise ConfigError(f"refine.potential_sampling={self.potential_sampling} must be > 0 [Å]")

    @property
    def shares_poses(self) -> bool:
        """Siblings are scored at the first one's pose only when the simulation (final_method) does
        not change per candidate (relaxation comes after, on the leading candidates only)."""
        return self.shared_pose and not self.final_method


_S = TypeVar("_S", bound="InferenceSettings")


@dataclass
class InferenceSettings:
    """Everything :func:`~surrogate.inference.pipeline.run_inference` needs besides the image and library."""

    method: str = "cnn"  # cnn (embedding + FAISS) | sift | hog | spectrum
    checkpoint: Optional[str] = None  # embedding checkpoint trained on the library (method=cnn)
    index: Optional[str] = None  # FAISS index; default <library>/index/<checkpoint hash>.faiss (built once)
    device: str = "cpu"  # cpu | cuda | auto
    pixel_size: Optional[float] = None  # [Å/px]; overrides the file's calibration, required where it has none
    channel: Optional[str] = None  # colour images only: gray | r | g | b
    frame: Optional[int] = None  # image stacks: frame index (default: sum of all frames)
    roi: Optional[List[int]] = None  # [row, col, height, width] in file pixels: analyse only this region
    preprocess: PreprocessSettings = field(default_factory=PreprocessSettings)
    retrieval: RetrievalSettings = field(default_factory=RetrievalSettings)
    lattice_check: LatticeSettings = field(default_factory=LatticeSettings)
    boundary_check: BoundarySettings = field(default_factory=BoundarySettings)
    rank: RankSettings = field(default_factory=RankSettings)
    refine: RefineSettings = field(default_factory=RefineSettings)

    def __post_init__(self):
        if self.method not in METHODS:
            raise ConfigError(f"unknown method {self.method!r}; use method={'|'.join(METHODS)}")
        _choice("device", self.device, ("cpu", "cuda", "auto"))

    @classmethod
    def from_config(cls: type[_S], cfg: Any = None, **overrides: Any) -> _S:
        """Settings from a config node or nested mapping, with keyword ``overrides`` on top (nested
        dicts for the stages: ``refine={"top": 0}``). Unknown keys and wrong types are a ConfigError."""
        from omegaconf import OmegaConf
        from omegaconf.errors import OmegaConfBaseException

        try:
            node = OmegaConf.merge(OmegaConf.structured(cls), cfg if cfg is not None else {}, overrides)
            return OmegaConf.to_object(node)  # type: ignore[return-value]
        except OmegaConfBaseException as exc:
            if isinstance(exc.__cause__, ConfigError):
                raise exc.__cause__ from None
            key = getattr(exc, "full_key", None)
            first = str(exc).splitlines()[0]
            raise ConfigError(f"bad inference setting{f' {key!r}' if key else ''}: {first}") from None

    def replace(self: _S, **changes: Any) -> _S:
        """A copy with ``changes`` (nested dicts merge into the stage settings: ``refine={"top": 0}``)."""
        from omegaconf import OmegaConf

        return type(self).from_config(OmegaConf.structured(self), **changes)


@dataclass
class InferConfig(InferenceSettings):
    """The schema of ``infer.yaml``: the settings plus what the command line adds."""

    image: str = "???"  # dm3, dm4, emd, ser, mrc, tif, hspy, png, jpg or npy
    library_dir: str = "demo_library"  # library built by surrogate-build-library
    output_dir: str = "${hydra:runtime.output_dir}"  # where the report goes
    wandb: bool = False  # also log the report to wandb (offline unless WANDB_MODE says otherwise)
    verbose: bool = False  # show library and third-party log lines on the console too


def register() -> None:
    """Put the schema into Hydra's ConfigStore as ``infer_schema`` (idempotent)."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="infer_schema", node=InferConfig)
