"""A seconds-long pipeline config for the tests: a tiny SR-LUT on synthetic images."""
from __future__ import annotations

from pathlib import Path

from training.data import synthetic_images


def tiny_pipeline_config(tmp_path: Path, legs: int = 2, extra: str = "", data: Path | None = None,
                         steps: int = 6, model: str = "") -> Path:
    """``tmp_path/tiny.toml``: 6 network steps and ``legs`` LUT legs of 2 steps on three
    synthetic images (or ``data``: a folder or pack), scored on two; ``extra`` lines go into
    its ``[pipeline]`` table, ``model`` lines into its ``[model]`` table."""
    if data is None:
        data = tmp_path / "images"
        synthetic_images(data, n=3, size=96)
    bench = tmp_path / "bench"
    synthetic_images(bench / "HR", n=2, size=64, seed=5)
    text = f'''
[model]
name = "SR-LUT"
scale = 4
interval = 64
stages = [["S"]]
{model}

[train]
nf = 4
batch_size = 2
crop = 12
steps = {steps}
val_every = 0
ckpt_every = 100
log_every = 1

[pipeline]
name = "tiny_x4"
data = ["{data}"]
run = "{tmp_path / 'run'}"
results = "{tmp_path / 'results'}"
threads = 1
eval_sets = ["{bench}"]
report_every = 4
{extra}
'''
    for i in range(legs):
        text += f"\n[[finetune.legs]]\nsteps = 2\nlr = {0.1 / (i + 1)}\nlr_min = 0.001\n" \
                "batch_size = 2\ncrop = 12\nval_every = 0\n"
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(text)
    return cfg
