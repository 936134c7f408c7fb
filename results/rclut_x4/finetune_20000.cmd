.venv/bin/python -m training.cli transfer runs/rclut_x4/last.pt -o runs/rclut_x4/transferred20000.npz
.venv/bin/python -m training.cli finetune runs/rclut_x4/transferred20000.npz --data ../shared/data/train/T91 ../shared/data/train/BSD200 ../shared/data/train/DIV2K_gray -o runs/rclut_x4/ft20000.npz --run runs/rclut_x4/ft20000 --steps 1500 --batch-size 16 --lr 0.1 --lr-min 0.005 --val-every 500 --threads 2
.venv/bin/python scripts/stamp_budget.py runs/rclut_x4/ft20000.npz --train runs/rclut_x4 --finetune runs/rclut_x4/ft20000 --threads 2 -o runs/rclut_x4/rclut_x4_20000.npz
