"""The embedding API the inference stage calls: a tiny model trained for a few CPU steps embeds to unit
vectors, retrieves clean renderings of library configurations at rank 1, tolerates rotation,
exports to a slim checkpoint, indexes a library, and refuses another library."""

import numpy as np
import pytest

from surrogate.errors import ConfigError, LibraryError
from surrogate.library import Library


@pytest.fixture(scope="module")
def tiny_model(tiny_library, tmp_path_factory):
    """Tiny embedding trained on the tiny library for a few CPU steps (deterministic seed)."""
    from hydra import compose, initialize_config_module

    from train import train

    out = tmp_path_factory.mktemp("embedding_run")
    with initialize_config_module(version_base="1.3", config_module="surrogate.configs"):
        cfg = compose(
            config_name="train",
            overrides=[
                "experiment=embedding_demo",
                f"library_dir={tiny_library}",
                f"paths.output_dir={out}",
                "logger=csv",
                "model.net.dim=16",
                "model.net.hidden=64",
                "model.net.input_size=32",
                "data.classes_per_batch=4",
                "data.images_per_class=4",
                "data.batch_size=8",
                "trainer.max_epochs=25",
                "+trainer.enable_progress_bar=false",
                "+trainer.enable_model_summary=false",
                "model.examples_every=0",
                "model.augment.dose=[1000.0,100000.0]",
                "data.fractions=[1.0,0.0,0.0]",
            ],
        )
    train(cfg)
    return out / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="module")
def library_images(tiny_library):
    lib = Library(tiny_library)
    return lib, np.stack([lib.image(i) for i in range(len(lib))]), lib.config_ids()


def test_embeddings_are_unit_vectors_and_record_the_library(tiny_model, library_images):
    from surrogate.embedding import load_embedder

    lib, images, _ = library_images
    emb = load_embedder(tiny_model, library=lib)
    assert (emb.library_hash, emb.sampling, emb.image_shape) == (lib.hash, lib.sampling, tuple(images.shape[1:]))
    z = emb.embed(images)
    assert z.shape == (len(images), emb.dim) and z.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(z, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(emb.embed(images[0]), z[:1], atol=1e-5)  # one (H, W) image
    with pytest.raises(ConfigError, match="expected images of shape"):
        emb.embed(np.zeros((2, 17, 17), np.float32))


def test_clean_renderings_of_library_configurations_retrieve_themselves(tiny_model, library_images, tmp_path):
    from surrogate.embedding import build_index, load_embedder
    from surrogate.index import EmbeddingIndex
    from surrogate.library.build import _settings
    from surrogate.simulate import render

    lib, images, cids = library_images
    index = build_index(lib.root, tiny_model, tmp_path / "lib.faiss")
    emb = load_embedder(tiny_model)
    assert len(index) == len(images)
    loaded = EmbeddingIndex.load(
        tmp_path / "lib.faiss", expect={"checkpoint_hash": emb.checkpoint_hash, "library_hash": lib.hash}
    )
    cfg = lib.manifest["config"]
    for cid in np.unique(cids):  # re-render each configuration from its structure row and library conditions
        rows = np.flatnonzero(cids == cid)
        again = render(
            lib.atoms(f"{int(cid):016x}"),
            [lib.conditions(int(i)) for i in rows],
            tuple(images.shape[1:]),
            _settings(cfg["simulate"]),
        )
        np.testing.assert_allclose(again, images[rows], rtol=1e-5, atol=1e-6)  # the library is reproducible
        idx, dist = loaded.search(emb.embed(again), k=len(loaded))
        for q, row in enumerate(rows):  # its own library image is at rank 1 (ties with identical embeddings allowed)
            own = dist[q, np.flatnonzero(idx[q] == row)[0]]
            assert own <= dist[q, 0] + 1e-5 and own < 1e-4, f"image {row} of {int(cid):016x} not retrieved first"


@pytest.mark.slow
def test_embedding_is_rotation_robust(tiny_model, library_images):
    from surrogate.augment import rotate_scale
    from surrogate.embedding import load_embedder

    lib, images, cids = library_images
    emb = load_embedder(tiny_model)
    z = emb.embed(images)
    same_image = []
    for angle in (90, 180, 270):
        zr = emb.embed(rotate_scale(images, angle))
        same_image.append((z * zr).sum(axis=1))
    same_image = np.stack(same_image)
    other = (z @ z.T)[cids[:, None] != cids[None, :]]
    assert same_image.mean() > other.mean()  # a rotated image stays nearer itself than other configurations are
    assert same_image.min() > 0.5


def test_slim_export_embeds_like_the_training_checkpoint(tiny_model, library_images, tmp_path):
    from surrogate.embedding import export_checkpoint, load_embedder

    _, images, _ = library_images
    slim = export_checkpoint(tiny_model, tmp_path / "tiny.pt")
    assert slim.stat().st_size < tiny_model.stat().st_size
    np.testing.assert_allclose(load_embedder(slim).embed(images), load_embedder(tiny_model).embed(images), atol=1e-5)


def test_checkpoint_of_another_library_is_a_clear_error(tiny_model, tiny_library, tmp_path):
    import json
    import shutil

    from surrogate.embedding import build_index, load_embedder

    other = tmp_path / "other"
    shutil.copytree(tiny_library, other)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["library_hash"] = "0123456789abcdef"
    (other / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(LibraryError, match="trained on library .* not .*0123456789abcdef"):
        load_embedder(tiny_model, library=other)
    with pytest.raises(LibraryError, match="trained on library"):
        build_index(other, tiny_model, tmp_path / "x.faiss")
    with pytest.raises(LibraryError, match="checkpoint not found"):
        load_embedder(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(LibraryError, match="cannot read embedding checkpoint"):
        load_embedder(tmp_path / "junk.pt")


def test_index_cli_builds_an_index(tiny_model, tiny_library, tmp_path, capsys):
    from surrogate.embedding.index import main

    main(["--library", str(tiny_library), "--checkpoint", str(tiny_model), "--out", str(tmp_path / "i.faiss")])
    assert "indexed" in capsys.readouterr().out and (tmp_path / "i.faiss.json").is_file()
    with pytest.raises(SystemExit) as exc:
        main(
            ["--library", str(tmp_path / "nolib"), "--checkpoint", str(tiny_model), "--out", str(tmp_path / "j.faiss")]
        )
    assert exc.value.code == 2
