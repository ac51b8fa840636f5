"""Scale-out paths: a library built by a multi-process dask cluster equals the in-process build, the
embedding trains under Lightning DDP with two gloo processes, and the family sampler shards its
batches across ranks."""

import os
import subprocess
import sys

import numpy as np

from tests.conftest import REPO, tiny_library_config
from tests.test_library import _read_all


def test_local_cluster_build_equals_synchronous_build(tiny_library, tmp_path):
    from surrogate.library import Library
    from surrogate.library.cli import build

    out = tmp_path / "cluster"
    build(tiny_library_config(out, **{"library.scheduler": "local", "library.n_workers": 2}))
    assert Library(out).hash == Library(tiny_library).hash  # same config -> same library identity
    a, b = _read_all(tiny_library), _read_all(out)  # tiny_library: library.scheduler=synchronous
    assert a[0].dtype == b[0].dtype == np.float32 and np.array_equal(a[0], b[0])  # bit-equal images
    assert np.array_equal(a[1], b[1])
    assert np.array_equal(a[2], b[2], equal_nan=True)
    assert a[3] == b[3]


def test_family_sampler_shards_disjoint_equal_batches_across_ranks():
    from surrogate.embedding.datamodule import FamilyBatchSampler

    labels = np.repeat(np.arange(12), 5)
    groups = np.array([f"g{c % 3}" for c in range(12)])
    whole = list(FamilyBatchSampler(labels, groups, 4, 2, seed=3))
    ranks = [list(FamilyBatchSampler(labels, groups, 4, 2, seed=3, rank=r, world_size=2)) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == len(whole) // 2
    assert ranks[0] == whole[0::2][: len(ranks[0])] and ranks[1] == whole[1::2][: len(ranks[1])]


def test_embedding_trains_with_ddp_on_two_cpu_processes(tiny_library, tmp_path):
    """``trainer=ddp_cpu``: Lightning starts a second process (gloo), both train, rank 0 checkpoints."""
    from surrogate.embedding.train import checkpoint_library
    from surrogate.library import Library

    run = tmp_path / "run"
    cmd = [
        sys.executable,
        str(REPO / "train.py"),
        "experiment=embedding_demo",
        "trainer=ddp_cpu",
        f"library_dir={tiny_library}",
        f"paths.output_dir={run}",
        f"hydra.run.dir={run}",
        "model.net.dim=16",
        "data.classes_per_batch=2",
        "data.images_per_class=2",
        "data.batch_size=4",
        "trainer.max_epochs=2",
        "+trainer.limit_train_batches=2",
        "+trainer.limit_val_batches=1",
        "+trainer.enable_progress_bar=false",
        "logger=csv",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "max_epochs=2` reached" in r.stdout + r.stderr
    assert r.stdout.count("checkpoints in") == 2  # both ranks finished
    assert (run / "train_ddp_process_1.log").exists()  # the second process was Lightning's
    rec = checkpoint_library(run / "checkpoints" / "last.ckpt")
    assert rec["library_hash"] == Library(tiny_library).hash


def test_ddp_trainer_configs_compose_and_shard_themselves():
    from hydra import compose, initialize_config_module
    from hydra.utils import instantiate

    for name, strategy in (("ddp", "ddp"), ("ddp_cpu", "DDPStrategy")):
        with initialize_config_module(version_base="1.3", config_module="surrogate.configs"):
            cfg = compose(config_name="train", overrides=["experiment=embedding_demo", f"trainer={name}"])
        assert cfg.trainer.use_distributed_sampler is False and strategy in str(cfg.trainer.strategy)
    trainer = instantiate(cfg.trainer, logger=False, default_root_dir="/tmp")  # ddp_cpu: built, not launched
    assert trainer.world_size == 2 and trainer.strategy.process_group_backend == "gloo"
