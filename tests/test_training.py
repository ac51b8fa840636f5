"""The embedding experiment trains, checkpoints, resumes, and refuses another library's checkpoint."""

import pytest
from hydra import compose, initialize_config_module

from surrogate.errors import LibraryError
from surrogate.library import Library


def compose_train(library_dir, out, *extra):
    with initialize_config_module(version_base="1.3", config_module="surrogate.configs"):
        return compose(
            config_name="train",
            overrides=[
                "experiment=embedding_demo",
                f"library_dir={library_dir}",
                f"paths.output_dir={out}",
                "model.net.dim=16",
                "data.batch_size=4",
                "trainer.max_epochs=1",
                "+trainer.limit_train_batches=2",
                "+trainer.limit_val_batches=1",
                "+trainer.enable_progress_bar=false",
                "logger=csv",
                *extra,
            ],
        )


def test_embedding_training_runs_checkpoints_and_resumes(tiny_library, tmp_path):
    from surrogate.embedding.train import checkpoint_library
    from train import train

    result = train(compose_train(tiny_library, tmp_path / "run"))
    assert result["sizes"]["train"] > 0 and "train/loss" in result["metrics"]
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    rec = checkpoint_library(last)
    lib = Library(tiny_library)
    assert (rec["library_hash"], rec["sampling"], rec["image_shape"]) == (lib.hash, 0.2, lib.manifest["image_shape"])
    assert rec["net"]["dim"] == 16 and rec["net"]["backbone"] == "mobilenet_v3_small"
    resumed = train(compose_train(tiny_library, tmp_path / "run2", f"ckpt_path={last}", "trainer.max_epochs=2"))
    assert "train/loss" in resumed["metrics"]


def test_checkpoint_of_another_library_is_refused(tiny_library, tmp_path):
    import torch

    from train import train

    fake = tmp_path / "other.ckpt"
    torch.save({"surrogate": {"library_hash": "0000", "sampling": 0.2}, "state_dict": {}}, fake)
    with pytest.raises(LibraryError, match="trained on library 0000"):
        train(compose_train(tiny_library, tmp_path / "run", f"ckpt_path={fake}"))
    with pytest.raises(LibraryError, match="checkpoint not found"):
        train(compose_train(tiny_library, tmp_path / "run", f"ckpt_path={tmp_path / 'none.ckpt'}"))


def test_proxy_loss_gets_one_learned_proxy_per_configuration(tiny_library, tmp_path):
    import torch

    from surrogate.embedding.embed import load_embedder
    from train import train

    result = train(compose_train(tiny_library, tmp_path / "run", "embedding/loss=normsoftmax"))
    assert "train/loss" in result["metrics"]
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    n_configs = len(set(Library(tiny_library).config_ids().tolist()))
    proxies = [v for k, v in ckpt["state_dict"].items() if k.startswith("loss_fn.")]
    assert [tuple(p.shape) for p in proxies] == [(16, n_configs)]  # embedding dim x configurations
    emb = load_embedder(tmp_path / "run" / "checkpoints" / "last.ckpt", library=tiny_library)  # proxies not needed
    assert emb.embed(Library(tiny_library).image(0)[None]).shape == (1, 16)


def test_group_term_trains_and_its_weights_are_not_stored(tiny_library, tmp_path):
    import torch

    from surrogate.embedding.module import EmbeddingModule
    from surrogate.errors import ConfigError
    from train import train

    result = train(compose_train(tiny_library, tmp_path / "run", "model.group_weight=1.0"))
    assert "train/group_loss" in result["metrics"]
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert not any("label_group" in k for k in ckpt["state_dict"])  # derived from the library, not stored weights
    with pytest.raises(ConfigError, match="needs label_groups"):
        EmbeddingModule(torch.nn.Identity(), optimizer=None, group_weight=1.0)


def test_validation_counts_a_sibling_configuration_as_a_group_hit():
    import torch

    from surrogate.embedding.module import EmbeddingModule

    # configurations 0, 1 form one group (say a bulk slab and its vacancy variant), 2, 3 another
    m = EmbeddingModule(torch.nn.Identity(), optimizer=None, label_groups=[0, 0, 1, 1], examples_every=0)
    logged = {}
    m.log = lambda name, value, **kw: logged.__setitem__(name, float(value))
    y = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])  # two validation images per configuration
    zc = torch.eye(4)[y]
    # queries of configurations 0 and 2 land on their group sibling's images, 1 and 3 on their own
    zq = torch.eye(4)[torch.tensor([1, 1, 1, 1, 3, 3, 3, 3])]
    m._val = [(zq, zc, y, torch.zeros(8, 1, 2, 2), torch.zeros(8, 1, 2, 2))]
    m.on_validation_epoch_end()
    assert logged["val/top1"] == 0.5 and logged["val/group_top1"] == 1.0
