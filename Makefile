# Everything runs inside .venv, created on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install --quiet --disable-pip-version-check
RUNTIME := $(VENV)/.installed-runtime
TESTDEPS := $(VENV)/.installed-test

.PHONY: demo test test-arm test-avx2 lint bench results figure clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

$(RUNTIME): pyproject.toml | $(VENV)/bin/python
	$(PIP) -e .
	touch $@

$(TESTDEPS): pyproject.toml | $(VENV)/bin/python
	$(PIP) -e '.[test]'
	touch $@ $(RUNTIME)

# x4 upscale of the bundled public-domain sample with the embedded default RC-LUT model
demo: $(RUNTIME)
	mkdir -p out
	$(VENV)/bin/rclut upscale rclut_numba/samples/astronaut_lr.png -o out/astronaut_x4.png --force
	@echo "output: out/astronaut_x4.png"

test: $(TESTDEPS)
	$(PY) -m pytest

# Same bytes on aarch64 as on x86, every model: an emulated aarch64 Python (qemu-user, Debian's
# arm64 packages, PyPI's aarch64 wheels) built once and cached in ~/.cache/rclut_numba/arm
test-arm: $(RUNTIME)
	$(PY) scripts/arm/test_arm.py

# The torch tests as an x86 CPU without native bf16 runs them (AVX2-only AMD, most laptops):
# torch's kernels and oneDNN held to AVX2, so precision "auto" resolves to float32 there
test-avx2: $(TESTDEPS)
	ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 $(PY) -m pytest \
	    tests/test_training_*.py tests/test_pipeline.py tests/test_bench_training.py \
	    tests/test_lut_forward.py tests/test_dense_mlp.py

# ruff, configured in pyproject.toml ([tool.ruff]); installed with the test extra
lint: $(TESTDEPS)
	$(VENV)/bin/ruff check .

bench: $(TESTDEPS)
	$(PY) benchmarks/bench_engine.py

# README results table (needs ../shared for the benchmark sets)
results: $(TESTDEPS)
	$(PY) scripts/results.py

figure: $(TESTDEPS)
	$(PY) scripts/make_figure.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis build *.egg-info out
