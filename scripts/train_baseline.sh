#!/usr/bin/env bash
# Train, transfer and LUT-fine-tune one model with the default RC-LUT's budget, so the results
# table compares like with like: 1000 steps of an 1100-step cosine schedule (batch 32, 48x48),
# then LUT fine-tuning 150 steps (lr 0.1 -> 0.01) + 300 steps (lr 0.05 -> 0.005), batch 16.
#
#   bash scripts/train_baseline.sh NAME CONFIG        e.g.  srlut_x4 training/configs/srlut.toml
#
# Re-running continues where it stopped: training resumes from RUN/last.pt, and a stage whose
# output exists is skipped. Everything goes to runs/NAME/ (git-ignored); pipeline.log has it all.
# THREADS=N sets the CPU threads of every step (default: all cores).
set -euo pipefail
name=${1:?usage: train_baseline.sh NAME CONFIG}
config=${2:?usage: train_baseline.sh NAME CONFIG}
py=${PYTHON:-.venv/bin/python}
threads=(${THREADS:+--threads "$THREADS"})
data="../shared/data/train/T91 ../shared/data/train/BSD200 ../shared/data/train/DIV2K_gray"
run=runs/$name
mkdir -p "$run"
exec >>"$run/pipeline.log" 2>&1
echo "== $(date -u +%FT%TZ) $name $config"

resume=()
[[ -f $run/last.pt ]] && resume=(--resume)
last_step=$(tail -n 50 "$run/log.jsonl" 2>/dev/null | grep -o '"step": [0-9]*' | tail -1 | grep -o '[0-9]*' || echo 0)
if (( ${last_step:-0} < 1000 )); then
  $py -m training.cli train --config "$config" --data $data --out "$run" --steps 1100 \
    --stop-after 1000 --cache runs/lr_cache_x4 --set val_every=250 --set ckpt_every=50 --set log_every=10 --quiet "${resume[@]}" "${threads[@]}"
fi
[[ -f $run/transferred.npz ]] || $py -m training.cli transfer "$run" -o "$run/transferred.npz"
[[ -f $run/ft1.npz ]] || $py -m training.cli finetune "$run/transferred.npz" --data $data \
  -o "$run/ft1.npz" --run "$run/ft1" --steps 150 --batch-size 16 --lr 0.1 --lr-min 0.01 \
  --val-every 50 "${threads[@]}" $( [[ -f $run/ft1/last.pt ]] && echo --resume )
[[ -f $run/ft2.npz ]] || $py -m training.cli finetune "$run/ft1.npz" --data $data \
  -o "$run/ft2.npz" --run "$run/ft2" --steps 300 --batch-size 16 --lr 0.05 --lr-min 0.005 \
  --val-every 100 "${threads[@]}" $( [[ -f $run/ft2/last.pt ]] && echo --resume )
# A longer LUT fine-tuning (2000 steps, lr 0.1 -> 0.01): cheap, and it keeps improving.
[[ -f $run/ft3.npz ]] || $py -m training.cli finetune "$run/ft2.npz" --data $data \
  -o "$run/ft3.npz" --run "$run/ft3" --steps 2000 --batch-size 16 --lr 0.1 --lr-min 0.01 \
  --val-every 500 "${threads[@]}" $( [[ -f $run/ft3/last.pt ]] && echo --resume )
echo "== $(date -u +%FT%TZ) $name done: $run/ft3.npz"
