#!/usr/bin/env bash
# GPU checks for one device lease (run from the repo root through the device tool; $OUT comes back).
# The trainings named in JOBS share the GPU at once, each with the same wall-clock budget (TRAIN_S, default 390 s):
#   si_a   ours on the mlearn Si split, experiment=potential_si as it stands (F=64, lr 5e-3; PaiNN with 3 blocks
#          and forces weight 0.01 before 2026-11-27, 4 blocks and 0.02 then; 2 blocks with moments and 0.05 since)
#   si_b   ours on the mlearn Si split, PaiNN 4 blocks, F=128, lr 2e-3
#   mace   MACE (mace-torch 0.3.16, 128x0e, max_ell 3, correlation 3, 2 layers) on the same split
#   cdte   ours on all labelled CdTe (experiment=potential_cdte)
#   demo   ours on Si + CdTe (experiment=potential_demo; its export is checkpoints/potential_demo.pt)
#   emb    the embedding (experiment=embedding_full) on demo_f16 (the demo library as float16)
#   si_fw, si_l4       Si with 3 blocks and forces weight 0.03, and 4 blocks with 0.02 (= potential_si since)
#   si_f1, si_f3, si_f10, si_f3w   PaiNN, 4 blocks, forces weight 0.1 / 0.3 / 1.0, and 0.3 with F=96
#   emb_ns, emb_ns128  the embedding with the normalised-softmax proxy loss, at 64 px / the full 128 px
#   emb_canon  the embedding in the canonical lattice frame (model.net.canonical=true; run beside emb)
# Needs carried: .whl_min/ (hydra, ase, zarr, ... for Python 3.12), .whl_mace/ (mace-torch, its
# dependencies, matscipy), demo_f16/. Locally (no GPU): DEV=cpu TRAIN_S=20 MACE_PY=/work/mace-venv/bin/python.
# Everything comes back as $OUT/results.tgz.part_* (models, exports, metrics, logs; parts of 15 MB, the
# tool returns files of at most 16 MB): cat results.tgz.part_* | tar xzf -
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
DEV=${DEV:-gpu}; TS=${TRAIN_S:-390}; PY=python3; MACE_PY=${MACE_PY:-python3}
T=$(printf "00:00:%02d:%02d" $((TS / 60)) $((TS % 60)))
if [ "$DEV" = gpu ]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
      .whl_min/*.whl .whl_mace/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu.txt"
fi
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=2
JOBS=${JOBS:-"si_a si_b cdte demo emb mace"}  # which runs share the GPU (names below)
G=${G:-/tmp/g}; rm -rf "$G"; mkdir -p "$G/mace"
run() { name=$1; shift; ( timeout $((TS + 120)) $PY train.py "$@" trainer=$DEV trainer.max_time=$T logger=csv \
          hydra.run.dir=$G/$name > $G/$name.log 2>&1; echo "exit $?" >> $G/$name.log ) & }
has() { case " $JOBS " in *" $1 "*) return 0;; esac; return 1; }
has si_a && run si_a experiment=potential_si trainer.max_epochs=5000
has si_b && run si_b experiment=potential_si trainer.max_epochs=5000 model.net.moments=false model.net.layers=4 model.net.features=128 model.optimizer.lr=2e-3
has si_fw && run si_fw experiment=potential_si trainer.max_epochs=5000 model.forces_weight=0.03 model.net.layers=3 model.net.moments=false
has si_l4 && run si_l4 experiment=potential_si trainer.max_epochs=5000 model.forces_weight=0.02 model.net.moments=false model.net.layers=4
has si_f1 && run si_f1 experiment=potential_si trainer.max_epochs=5000 model.forces_weight=0.1 model.net.moments=false model.net.layers=4
has si_f3 && run si_f3 experiment=potential_si trainer.max_epochs=5000 model.forces_weight=0.3 model.net.moments=false model.net.layers=4
has si_f10 && run si_f10 experiment=potential_si trainer.max_epochs=5000 model.forces_weight=1.0 model.net.moments=false model.net.layers=4
has si_f3w && run si_f3w experiment=potential_si trainer.max_epochs=5000 model.forces_weight=0.3 model.net.features=96 model.net.moments=false model.net.layers=4
has cdte && run cdte experiment=potential_cdte trainer.max_epochs=5000
has demo && run demo experiment=potential_demo trainer.max_epochs=5000
has emb && run emb experiment=embedding_full library_dir=demo_f16 trainer.max_epochs=${EMB_EPOCHS:-800}
has emb_canon && run emb_canon experiment=embedding_full library_dir=demo_f16 +model.net.canonical=true \
    trainer.max_epochs=${EMB_EPOCHS:-800}
has emb_ns && run emb_ns experiment=embedding_full library_dir=demo_f16 embedding/loss=normsoftmax trainer.max_epochs=5000
has emb_ns128 && run emb_ns128 experiment=embedding_full library_dir=demo_f16 embedding/loss=normsoftmax \
    model.net.input_size=null trainer.max_epochs=5000

has mace && $PY benchmarks/potential.py split-files $G/splits > $G/splits.log 2>&1
has mace && (
  cd $G/mace || exit 1
  export TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1  # e3nn 0.4.4 constants under torch >= 2.6
  M="$MACE_PY -m mace.cli.run_train --name mace_si --work_dir $G/mace --train_file $G/splits/si_train.extxyz
     --valid_file $G/splits/si_val.extxyz --test_file $G/splits/si_test.extxyz --energy_key REF_energy
     --forces_key REF_forces --stress_key REF_stress --E0s average --model MACE --hidden_irreps 128x0e --r_max 5.0
     --max_ell 3 --correlation 3 --num_interactions 2 --batch_size 4 --valid_batch_size 8 --ema --ema_decay 0.99
     --amsgrad --lr 0.01 --default_dtype float32 --device $( [ "$DEV" = gpu ] && echo cuda || echo cpu ) --seed 0"
  start=$(date +%s)
  timeout $TS $M --max_num_epochs 100000 > log1.txt 2>&1
  echo "mace training $(( $(date +%s) - start )) s" > time.txt
  E=$(ls checkpoints 2>/dev/null | sed -n 's/.*epoch-\([0-9]*\)\.pt/\1/p' | sort -n | tail -1)
  [ -n "$E" ] && timeout 200 $M --max_num_epochs $((E + 1)) --restart_latest > log2.txt 2>&1
  echo "exit $?" >> time.txt
) &
wait

for d in $G/emb*/; do  # embedding exports (best checkpoint, else the last)
  n=$(basename $d); ckpt=$(ls $d/checkpoints/best*.ckpt 2>/dev/null | head -1); ckpt=${ckpt:-$d/checkpoints/last.ckpt}
  $PY -m surrogate.embedding.export --checkpoint "$ckpt" --out $d/embedding.pt --half > $G/export_$n.log 2>&1
done
for d in $G/si_*/; do  # potentials: keep the last Lightning checkpoint to resume on the CPU (ckpt_path=...)
  [ -f $d/checkpoints/last.ckpt ] && cp $d/checkpoints/last.ckpt $d/last_ckpt.pt
done
cd $G && tar czf /tmp/results.tgz --exclude='*.ckpt' --exclude='checkpoints' --exclude='mace/logs' \
    --exclude='*compiled*' --exclude='*stagetwo*' --exclude='splits' . 2>/dev/null
split -b 15M /tmp/results.tgz "$OUT/results.tgz.part_"
ls -la "$OUT"; tail -n 3 $G/*.log
