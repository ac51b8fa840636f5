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
