.venv/bin/python -m training.cli transfer runs/rclut_x4 -o runs/rclut_x4/transferred2200.npz
.venv/bin/python -m training.cli finetune runs/rclut_x4/transferred2200.npz --data ../shared/data/train/T91 ../shared/data/train/BSD200 ../shared/data/train/DIV2K_gray -o runs/rclut_x4/ft2200.npz --run runs/rclut_x4/ft2200 --steps 2500 --batch-size 16 --lr 0.1 --lr-min 0.005 --val-every 500 --threads 2
