#!/usr/bin/env bash
# GPU checks for one H100 lease (run from the repo root through the device tool; $OUT comes back).
# Three trainings share the GPU, each bounded by its config's max_time (4 min):
#   potential_si (mlearn Si split, the accuracy figures), potential_demo (Si + CdTe, shipped),
#   embedding on gb_library (MobileNetV3-small at 128 px, shipped for the grain-boundary experiment),
# then a GPU-vs-CPU abTEM check of the simulation path (simulate.settings.device=gpu).
# Needs: .whl/ (abtem, ase, hydra, zarr, ... for Python 3.12) and gb_library/ carried.
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 OMP_NUM_THREADS=4
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu.txt"
run() { name=$1; shift; ( timeout 330 python3 train.py "$@" hydra.run.dir=/tmp/$name > /tmp/$name.log 2>&1; echo "exit $?" >> /tmp/$name.log ) & }
run pot_si experiment=potential_si trainer=gpu
run pot_demo experiment=potential_demo trainer=gpu
run emb_gb experiment=embedding_full library_dir=gb_library embedding/backbone=mobilenet_v3_small \
    model.net.input_size=null data.classes_per_batch=28 data.images_per_class=8
python3 benchmarks/gpu_simulation.py > "$OUT/gpu_sim.txt" 2>&1
wait
for n in pot_si pot_demo emb_gb; do tail -c 20000 /tmp/$n.log > "$OUT/$n.log"; done
cp /tmp/pot_si/potential.pt "$OUT/potential_si.pt" 2>/dev/null
cp /tmp/pot_demo/potential.pt "$OUT/potential_demo.pt" 2>/dev/null
python3 -m surrogate.embedding.export --checkpoint /tmp/emb_gb/checkpoints/last.ckpt --out "$OUT/embedding_gb.pt" --half
ls -la "$OUT"
