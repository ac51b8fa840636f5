import numpy as np
import pytest
import torch

from surrogate.augment import Corrupt
from surrogate.embedding import EmbeddingNet
from surrogate.errors import ConfigError

#: every corruption but the dose (and the signal level) switched off
NO_CORRUPTION = dict(
    rotation=0,
    flip=False,
    scale=0,
    translate=0,
    drift=0,
    jitter=0,
    blur=(0, 0),
    read_noise=0,
    background=0,
    gamma=(1, 1),
)


def lattice(n=64, period=8):
    y, x = np.mgrid[0:n, 0:n]
    return torch.tensor(np.cos(2 * np.pi * x / period) + np.cos(2 * np.pi * y / period), dtype=torch.float32)[
        None, None
    ]


def test_corruption_is_seeded_standardised_and_changes_the_image():
    x = lattice().repeat(4, 1, 1, 1)
    a = Corrupt()(x, torch.Generator().manual_seed(0))
    b = Corrupt()(x, torch.Generator().manual_seed(0))
    c = Corrupt()(x, torch.Generator().manual_seed(1))
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, c)
    assert torch.allclose(a.mean(dim=(2, 3)), torch.zeros(4, 1), atol=1e-4)
    assert torch.allclose(a.std(dim=(2, 3)), torch.ones(4, 1), atol=1e-3)
    assert not torch.allclose(a[0], a[1])  # parameters drawn per image


def test_lower_dose_is_noisier():
    x = lattice().repeat(8, 1, 1, 1)
    quiet = dict(NO_CORRUPTION, signal=(0.1, 0.1))
    clean = Corrupt(dose=None, **quiet)(x)
    low = Corrupt(dose=(1e2, 1e2), **quiet)(x, torch.Generator().manual_seed(0))
    high = Corrupt(dose=(1e5, 1e5), **quiet)(x, torch.Generator().manual_seed(0))
    assert (low - clean).std() > 3 * (high - clean).std()


def test_identity_settings_leave_a_lattice_unchanged_up_to_standardisation():
    x = lattice()
    out = Corrupt(dose=None, **NO_CORRUPTION)(x)
    ref = (x - x.mean()) / x.std()
    assert torch.allclose(out, ref, atol=1e-3)


@pytest.mark.parametrize("backbone", ["resnet18", "efficientnet_b0"])
def test_embeddings_are_unit_vectors(backbone):
    net = EmbeddingNet(backbone, dim=16).eval()
    with torch.no_grad():
        z = net(torch.randn(3, 1, 64, 64))
    assert z.shape == (3, 16)
    assert torch.allclose(z.norm(dim=1), torch.ones(3), atol=1e-5)


def test_fresh_network_tells_images_apart_in_eval_mode_after_a_few_training_steps():
    """MobileNetV3's own BatchNorm momentum (0.01) leaves its running statistics at their initial
    values for hundreds of steps, and in eval mode every image then embeds to the same vector;
    with bn_momentum=0.1 a hundred training-mode passes are enough (measured: still 1.0 after 30)."""
    torch.manual_seed(0)
    x = torch.nn.functional.avg_pool2d(torch.randn(16, 1, 68, 68), 5, 1)  # smooth, different images
    x = (x - x.mean(dim=(2, 3), keepdim=True)) / x.std(dim=(2, 3), keepdim=True)

    def eval_cosine(net):
        net.train()
        with torch.no_grad():
            for _ in range(100):
                net(x)  # updates the running statistics only
        net.eval()
        with torch.no_grad():
            z = net(x)
        return float((z @ z.T)[~torch.eye(len(x), dtype=torch.bool)].mean())

    torch.manual_seed(1)
    assert eval_cosine(EmbeddingNet("mobilenet_v3_small", dim=16, hidden=32)) < 0.99
    torch.manual_seed(1)
    stale = EmbeddingNet("mobilenet_v3_small", dim=16, hidden=32, bn_momentum=None)
    assert next(m for m in stale.modules() if isinstance(m, torch.nn.BatchNorm2d)).momentum == 0.01


def test_unknown_backbone_is_a_clear_error():
    with pytest.raises(ConfigError, match="unknown backbone"):
        EmbeddingNet("vgg11")


def polar_lattice(n=128, angle=30.0):
    """Three reflections g1 (period 16 px, wave vector at ``angle`` [deg from +x towards +rows]),
    g2 (period 14 px, 60° away, weaker) and g1 + g2 with a phase that is neither 0 nor π: a lattice
    without a centre of symmetry, so a 180° turn and a mirror both give a different image."""
    y, x = np.mgrid[0:n, 0:n].astype(float)
    t1, t2 = np.radians(angle), np.radians(angle + 60)
    p1 = 2 * np.pi * (x * np.cos(t1) + y * np.sin(t1)) / 16
    p2 = 2 * np.pi * (x * np.cos(t2) + y * np.sin(t2)) / 14
    img = np.cos(p1) + 0.6 * np.cos(p2) + 0.4 * np.cos(p1 + p2 + 1.0)
    return torch.tensor(img, dtype=torch.float32)[None, None]


@pytest.mark.parametrize("angle", [0.0, 30.0, 75.0, 140.0])
def test_lattice_orientation_finds_the_strongest_reflection(angle):
    from surrogate.augment.orientation import lattice_orientation

    got = float(lattice_orientation(polar_lattice(angle=angle))[0])
    assert abs((got - angle + 90) % 180 - 90) < 1.0


def test_canonicalise_brings_any_rotation_or_mirror_image_to_one_frame():
    """Rotated, mirrored, noisy copies of a lattice without a centre of symmetry are canonicalised
    to the same picture (the bispectrum fixes the 180° turn, the second reflection the mirror),
    which the raw copies are not; the canonical network applies it."""
    from surrogate.augment.corruptions import rotate_scale
    from surrogate.augment.orientation import canonicalise

    x = polar_lattice(angle=20.0)
    rotations = [0.0, 33.0, 95.0, 160.0, 180.0, 250.0]
    views = torch.cat([rotate_scale(x[:, 0], r)[:, None] for r in rotations])
    views = torch.cat([views, torch.flip(views, dims=(-2,))])
    views = views + 0.3 * torch.randn(views.shape, generator=torch.Generator().manual_seed(0))
    canon = canonicalise(views)

    def centre_corr(a, b):  # correlation of the central 64 x 64 (away from the padded corners)
        a, b = a[..., 32:96, 32:96].flatten(1), b[..., 32:96, 32:96].flatten(1)
        a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
        return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))

    same = centre_corr(canon, canon[:1].expand_as(canon))
    raw = centre_corr(views, views[:1].expand_as(views))
    assert same.min() > 0.8 and raw[1:].max() < 0.5
    net = EmbeddingNet("resnet18", dim=16, canonical=True).eval()
    assert net.config["canonical"] and not EmbeddingNet("resnet18", dim=16).config["canonical"]
    with torch.no_grad():
        z = net.head(net.backbone(canon[:2]))
        assert torch.allclose(net(views[:2]), z / z.norm(dim=1, keepdim=True), atol=1e-5)
