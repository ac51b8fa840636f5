import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def tiny_library_config(output_dir, **overrides):
    """A composed build_library config shrunk to seconds: Si [110], 32 px images."""
    from hydra import compose, initialize_config_module

    base = [
        f"library.output_dir={output_dir}",
        "library.images_per_structure=3",
        "library.shape=[32,32]",
        "library.scheduler=synchronous",
        "structures.materials=[{name: Si}]",
        "structures.zone_axes=[[1,1,0]]",
        "structures.thicknesses=[8.0]",
        "structures.fov=[6.4,6.4]",
        "structures.defects.per_slab=3",
        "structures.boundaries=[]",
        "progress=false",
    ]
    base += [f"{k}={v}" for k, v in overrides.items()]
    with initialize_config_module(version_base="1.3", config_module="surrogate.configs"):
        return compose(config_name="build_library", overrides=base)


@pytest.fixture(scope="session")
def cdte():
    from surrogate.structures import crystal

    return crystal("CdTe")


@pytest.fixture(scope="session")
def si():
    from surrogate.structures import crystal

    return crystal("Si")


@pytest.fixture(scope="session")
def tiny_library(tmp_path_factory):
    from surrogate.library.cli import build

    out = tmp_path_factory.mktemp("lib") / "lib"
    cfg = tiny_library_config(out)
    build(cfg)
    return out


def ssim(a, b):
    from skimage.metrics import structural_similarity

    a = (a - a.mean()) / a.std()
    b = (b - b.mean()) / b.std()
    return structural_similarity(a, b, data_range=float(np.ptp(b)))


@pytest.fixture(scope="session")
def embedder_ckpt(tiny_library, tmp_path_factory):
    """An (untrained) embedding checkpoint in the shipped format, recorded against the tiny library."""
    import torch

    from surrogate.embedding.embed import FORMAT
    from surrogate.embedding.networks import EmbeddingNet
    from surrogate.library import Library

    torch.manual_seed(0)
    lib = Library(tiny_library)
    net_cfg = {"backbone": "resnet18", "dim": 16}
    net = EmbeddingNet(**net_cfg)
    rec = {
        "library_hash": lib.hash,
        "sampling": lib.sampling,
        "image_shape": lib.manifest["image_shape"],
        "net": net_cfg,
    }
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    torch.save({"format": FORMAT, "state_dict": net.state_dict(), "surrogate": rec}, path)
    return path


# bicrystal fixtures shared by test_grains and test_refine_columns: a Σ3 twin and its grain 2 moved
GRAIN_SHAPE = (96, 96)
GRAIN_MARGIN = 2.0


@pytest.fixture(scope="module")
def twin_recipe():
    # the Σ3 twin as ingrained describes it (CdTe [110], tilts ±35.26° about [001] up)
    g = {"zone_axis": [1, 1, 0], "upward": [0, 0, 1]}
    return {
        "kind": "gb",
        "name": "twin",
        "material": {"name": "CdTe"},
        "thickness": 9.0,
        "fov": [25.6, 25.6],
        "zone_axis": [1, 1, 0],
        "grain1": dict(g, tilt=54.73538),
        "grain2": dict(g, tilt=125.26462, flip_species=True),
        "translation": [0, 0, 0],
    }


@pytest.fixture(scope="module")
def conditions():
    from surrogate.simulate.conditions import ImagingConditions

    return ImagingConditions(mode="haadf", method="incoherent", sampling=0.2, source_size=0.4)


@pytest.fixture(scope="module")
def rotated(twin_recipe, conditions):
    """The candidate, and the truth: its grain 2 rotated by 1° (and moved 0.3, 0.5 Å), imaged."""
    from surrogate.inference import grains
    from surrogate.inference.refine import Fit, fom, simulate_field, transform, widen_boundary
    from surrogate.structures import build_structure

    cand = build_structure(twin_recipe)
    wide = widen_boundary(cand, GRAIN_MARGIN * GRAIN_SHAPE[0] * conditions.sampling)
    gr = grains._grains(wide, (GRAIN_MARGIN * GRAIN_SHAPE[1] * 0.2, GRAIN_MARGIN * GRAIN_SHAPE[0] * 0.2))
    x = {n: 0.0 for n, _ in grains.PARAMS}
    x.update(rot2=1.0, tx2=0.3, ty2=0.5, boundary=0.4)
    truth = grains.build_fitted(gr, x, 1.5, cand)
    window = transform(simulate_field(truth, conditions, GRAIN_SHAPE), GRAIN_SHAPE)
    fit = Fit()  # the library pose, as the refinement leaves it when it cannot do better
    fit.extra["margin"] = GRAIN_MARGIN
    fit.fom, _, fit.ssim = fom(window, transform(simulate_field(wide, conditions, GRAIN_SHAPE), GRAIN_SHAPE))
    return cand, truth, window, fit
