# Two commands do everything on a fresh machine (Python 3.11):
#   make demo   trains the tiny CLIP baseline on the built-in synthetic data (CPU) and evaluates it
#   make test   runs the test suite
#   make benchmark  trains every method on the synthetic data and prints the method table (optional)
# Both create .venv if it is missing and install into it (idempotent; re-run after setup.py changes).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.fastreid_clip_setup
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
DEMO_CONFIG ?= configs/Synthetic/clip_baseline_vit_tiny.yml
DEMO_OUTPUT ?= output/demo

.PHONY: setup demo test test-large benchmark clean

$(STAMP): setup.py fastreid_clip/evaluation/candidate_scan.pyx
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_PINS)
	$(PY) -m pip install -q -e ".[cpu,test]"
	$(PY) -m pip install -q --no-deps fastreid==1.4.0
	$(PY) -m fastreid_clip.utils.build_ranker
	$(PY) -m fastreid_clip.utils.build_kernels
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(PY) tools/train_net.py --config-file $(DEMO_CONFIG) OUTPUT_DIR $(DEMO_OUTPUT)

test: setup
	$(PY) -m pytest -q tests

# Every method with a synthetic config trained from the shipped synthetic CLIP, in-domain and held-out-domain
# tables (tools/benchmark_methods.py; with every method about an hour or more on 2 CPU cores; unchanged runs are reused).
benchmark: setup
	$(PY) tools/benchmark_methods.py

# ViT-B/16 / RN50-sized checks (minutes on a CPU); not part of CI.
test-large: setup
	$(PY) -m pytest -q -m large tests

clean:
	rm -rf output logs .pytest_cache
