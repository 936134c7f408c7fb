#!/usr/bin/env bash
# Run from the repository root once train5.cmd is going: waits for it to stop, and if it
# stopped at step 20000 (not killed mid-run) transfers, fine-tunes the LUTs and scores the
# stamped bundle. It ships nothing: compare runs/rclut_x4/eval20000.txt with the default first.
set -euo pipefail
while pgrep -f "training.cli train" >/dev/null; do sleep 20; done
step=$(.venv/bin/python -c "import torch; print(torch.load('runs/rclut_x4/last.pt', weights_only=False)['step'])")
if [ "$step" != 20000 ]; then echo "training stopped at step $step, not 20000: nothing done"; exit 1; fi
echo "== $(date -u +%FT%TZ) transfer and fine-tune"
bash -e results/rclut_x4/finetune_20000.cmd
for s in Set5 Set14 B100; do
  echo "== $(date -u +%FT%TZ) eval $s"
  .venv/bin/rclut eval ../shared/data/benchmark/$s --model runs/rclut_x4/rclut_x4_20000.npz | tail -1
done | tee runs/rclut_x4/eval20000.txt
echo "== $(date -u +%FT%TZ) done"
