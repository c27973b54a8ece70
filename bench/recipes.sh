#!/usr/bin/env bash
# The classifier recipe comparison in the README: nine recipes at an equal budget of 5 epochs (one
# of them upscaled to 192x256), then three at 10 epochs (imbalance handling with and without
# mixup/CutMix), on the shipped models' split. Usage: bash bench/recipes.sh DATA_DIR SPLIT_JSON [OUT_DIR]
set -euo pipefail
DATA=${1:?data folder, e.g. ../shared/data/ham10000}
SPLIT=${2:?split file, e.g. assets/models/classifier/split.json}
OUT=${3:-runs/compare}
PY=${PYTHON:-.venv/bin/python}
COMMON="--data $DATA --split $SPLIT --epochs 5 --label-smoothing 0.1 --lr 2e-3 --warmup 1 --weight-decay 0.05 --half --threads 2 --patience 30 --augment medium"
STRONG="--class-augment df=strong,vasc=strong,akiec=strong,bcc=strong"
run() { name=$1; shift; echo "== $name"; $PY train.py classify --out "$OUT/$name" $COMMON "$@" | tail -n 2; }
run mnv4s-112-balanced --arch mobilenetv4_conv_small --img-size 112 144 --imbalance balanced $STRONG
run mnv4s-112-weighted --arch mobilenetv4_conv_small --img-size 112 144 --imbalance weighted $STRONG
run mnv4s-96-balanced --arch mobilenetv4_conv_small --img-size 96 128 --imbalance balanced $STRONG
run regnetx002-112-balanced --arch regnetx_002 --img-size 112 144 --imbalance balanced $STRONG
run mnv4s-112-balanced-lightaug --arch mobilenetv4_conv_small --img-size 112 144 --imbalance balanced --augment light
run mnv4s-112-both --arch mobilenetv4_conv_small --img-size 112 144 --imbalance both $STRONG
run mnv4s-112-sqrt --arch mobilenetv4_conv_small --img-size 112 144 --imbalance sqrt $STRONG
run mnv4s-150-balanced --arch mobilenetv4_conv_small --img-size 150 200 --imbalance balanced $STRONG
run mnv4s-192-balanced --arch mobilenetv4_conv_small --img-size 192 256 --imbalance balanced $STRONG  # upscaled
# 10 epochs (the last --epochs wins): the shipped recipe, + mixup/CutMix, and logit adjustment + mixup/CutMix
MNV4="--arch mobilenetv4_conv_small --img-size 112 144 --epochs 10 $STRONG"
run cmp10-balanced $MNV4 --imbalance balanced
run cmp10-balanced-mix $MNV4 --imbalance balanced --mixup 0.2 --cutmix 1.0
run cmp10-logitadj-mix $MNV4 --imbalance logit-adjust --mixup 0.2 --cutmix 1.0
$PY -m bench.recipe_table "$OUT"/*/   # the README table, from the bundles' meta.json
