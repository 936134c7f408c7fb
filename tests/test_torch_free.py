"""The runtime (rclut_numba) never imports torch or the training package.

Checked in a fresh interpreter, since this test process itself has torch loaded by other tests:
load the embedded default model, upscale an array and the bundled sample through the CLI, then
import every module of the package, and list what of torch or training came along.
"""
import json
import subprocess
import sys

SCRIPT = r"""
import importlib, json, pkgutil, sys
import numpy as np
import rclut_numba
from rclut_numba.cli import main

def forbidden():
    return sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "training"))

model = rclut_numba.load_model()
lr = (np.arange(12 * 10 * 3) * 7 % 256).astype(np.uint8).reshape(12, 10, 3)
hr = model.upscale(lr)
assert hr.shape == (12 * model.spec.scale, 10 * model.spec.scale, 3) and hr.dtype == np.uint8
sample = rclut_numba.__path__[0] + "/samples/astronaut_lr.png"
assert main(["upscale", sample, "-o", sys.argv[1]]) == 0
after_use = forbidden()
for info in pkgutil.walk_packages(rclut_numba.__path__, "rclut_numba."):
    importlib.import_module(info.name)
print(json.dumps({"after_use": after_use, "after_all_imports": forbidden()}))
"""


def test_runtime_imports_neither_torch_nor_training(tmp_path):
    out = tmp_path / "x4.png"
    p = subprocess.run([sys.executable, "-c", SCRIPT, str(out)], capture_output=True, text=True,
                       cwd=tmp_path, timeout=600)
    assert p.returncode == 0, p.stderr
    assert out.is_file()
    found = json.loads(p.stdout.strip().splitlines()[-1])
    assert found == {"after_use": [], "after_all_imports": []}
