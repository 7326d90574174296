#!/usr/bin/env bash
# The DTS CPU studies of results/dts/: one `spikevit dts study` call per (seed, run), each run
# under the shared heavy-job lock, so the studies can be killed and rerun (finished runs are skipped,
# unfinished ones resume from their last epoch) and other heavy jobs can interleave between runs.
#
#   benchmarks/dts_study.sh mnist-paper DATA_ROOT WORK_DIR     # the MNIST study's qkv+mlp rows, paper grouping
#   benchmarks/dts_study.sh cifar10 DATA_ROOT WORK_DIR          # CIFAR-10: fixed T = 1, 2, 4, TET, Hoyer vs DTS
#   benchmarks/dts_study.sh cifar10-report DATA_ROOT WORK_DIR   # the CIFAR-10 report (seed 0 + replicates)
#   benchmarks/dts_study.sh mnist-paper-report DATA_ROOT WORK_DIR
#
# DATA_ROOT holds <dataset>/{train,test}/<class>/...; WORK_DIR receives one folder per seed.
# SPIKEVIT_CMD overrides the command (default .venv/bin/spikevit), e.g. "python3 -m spikevit.cli.main";
# SEEDS="1 2" runs (or reports) only those seeds.
set -euo pipefail
what=${1:?study name}; data=${2:?data root}; work=${3:?work dir}
cd "$(dirname "$0")/.."
read -r -a spikevit <<< "${SPIKEVIT_CMD:-.venv/bin/spikevit}"
lock=${SPIKEVIT_HEAVY_LOCK:-/tmp/spikevit-heavy.lock}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} SPIKEVIT_QUIET=1

case $what in
mnist-paper*)
  # the runs of results/dts/study.md (MNIST 3k, Spikformer-1-64, 3 epochs) whose mask loss is qkv+mlp,
  # with the paper's layer grouping (the default)
  args=(--dataset mnist --data-root "$data" --arch spikformer-1-64 --tmax 4 --init-steps 2 --epochs 3
        --batch-size 50 --lr 4e-3 --warmup-epochs 0.3 --train-subset 3000 --test-subset 2000
        --lambdas 1e-3,1e-2,3e-2,1e-1 --groupings qkv+mlp --fixed-t "" --no-nomask --grouping paper)
  runs=(dts-qkv+mlp-lam1e-3 dts-qkv+mlp-lam1e-2 dts-qkv+mlp-lam3e-2 dts-qkv+mlp-lam1e-1)
  seeds=(0 1); json=results/dts/study-paper-grouping.json ;;
cifar10*)
  # CIFAR-10 32x32, 5,000 training images (500 per class), 2,000 test images, Spikformer-1-64, 3 epochs,
  # three seeds on the same images: fixed T = 1, 2, 4; the Table II baselines (TET, Hoyer) at T = 2;
  # DTS (Tmax 4, init 2, mask loss on qkv+mlp, paper grouping)
  args=(--dataset cifar10 --data-root "$data" --arch spikformer-1-64 --tmax 4 --init-steps 2 --epochs 3
        --batch-size 64 --lr 4e-3 --warmup-epochs 0.3 --train-subset 5000 --test-subset 2000 --eval-every 3
        --lambdas 1e-2 --groupings qkv+mlp --fixed-t 1,2,4 --no-nomask --grouping paper
        --baselines tet:2,hoyer:2 --tet-lambda 1e-3 --hoyer-lambda 1e-8)
  runs=(fixed-T1 fixed-T2 dts-qkv+mlp-lam1e-2 fixed-T4 tet-T2 hoyer-T2)
  seeds=(0 1 2); json=results/dts/cifar10-study.json ;;
*) echo "unknown study $what" >&2; exit 2 ;;
esac
if [[ -n ${SEEDS:-} ]]; then read -r -a seeds <<< "$SEEDS"; fi    # e.g. SEEDS="2": only those seeds

if [[ $what == *-report ]]; then
  reps=()
  for s in "${seeds[@]:1}"; do reps+=(--replicate "seed$s=$work/seed$s"); done
  "${spikevit[@]}" dts study "${args[@]}" --out "$work/seed${seeds[0]}" --seed "${seeds[0]}" --data-seed 0 --report-only "${reps[@]}" --json "$json"
  exit 0
fi
for s in "${seeds[@]}"; do
  for r in "${runs[@]}"; do
    if [[ -f $work/seed$s/$r/measure.json ]]; then continue; fi
    echo "$(date -u +%H:%M:%S) seed $s run $r"
    flock "$lock" nice -n 5 "${spikevit[@]}" dts study "${args[@]}" --seed "$s" --data-seed 0 --runs "$r" \
      --out "$work/seed$s" --no-report
  done
done
