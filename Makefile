# Two commands a user needs (see README): `make repro` and `make test`. Both create .venv if missing.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.cocoins-installed
# Stage commands run whatever `python` is first on PATH: put the venv there for every recipe.
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export DVC_NO_ANALYTICS := 1
# The embedded default and the tests need no hub: nothing may be fetched. `make full-scale` names hub ids, so
# it leaves downloads on (each model is fetched once into the Hugging Face cache by from_pretrained).
repro test test-fast bench rehearse: export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
# The CPU's own kernels by default; `COCOINS_CPU_KERNELS=pinned make repro` runs every stage on the pinned ones
# (cocoins/runtime.py, CPU_KERNEL_PINS: the same bits across simulated CPUs on one machine, not across real CPU models: docs/reproducibility.md).
# sam2 builds a CUDA extension unless told not to; the Python package is all we need.
export SAM2_BUILD_CUDA := 0

.PHONY: install repro test test-fast bench plots clean-venv full-scale preflight rehearse

install: $(STAMP)

# Re-installs only when the project's requirements change; a second run is a no-op.
$(STAMP): pyproject.toml constraints.txt requirements-app.txt Makefile
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip==26.3"
	$(PY) -m pip install --quiet -c constraints.txt -e ".[test,groundingdino]"
	# facenet-pytorch pins torch<2.3 and numpy<2 in its metadata but runs on ours; its wheel ships MTCNN.
	$(PY) -m pip install --quiet -c constraints.txt --no-deps "facenet-pytorch==2.6.0"
	# gradio 6.31.0 (the web app) declares pillow<13 but runs on the pinned pillow 13.0.0 (the browser test drives
	# it): its other requirements come from requirements-app.txt, gradio itself without its metadata's pins.
	$(PY) -m pip install --quiet -c constraints.txt -r requirements-app.txt
	$(PY) -m pip install --quiet -c constraints.txt --no-deps "gradio==6.31.0"
	# groundingdino-py pins supervision 0.6 and opencv-python that its model code does not need; the `groundingdino`
	# extra above holds what it imports (mask.detector_impl: groundingdino, the Grounded-SAM-2 checkpoints).
	$(PY) -m pip install --quiet -c constraints.txt --no-deps "groundingdino-py==0.4.0"
	# The offline plot template needs npm: a warning without it, an error under CI=true (the plot tests need it).
	$(PY) -m cocoins.tools.offline_plots --install $(if $(filter true,$(CI)),--strict)
	@touch $(STAMP)

repro: $(STAMP)
	dvc repro
	@$(PY) -m cocoins.tools.summary

# Two pytest workers, each test file on one worker (module fixtures built once): on 2 cores the suite's one-thread
# parts overlap. PYTEST_WORKERS=0 runs it in one process.
PYTEST_WORKERS ?= 2
test: $(STAMP)
	$(PY) -m pytest -q -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder

test-fast: $(STAMP)
	$(PY) -m pytest -q -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder -m "not slow"

# Full scale (docs/full-scale.md): PROFILE into params.yaml (comments kept; fill in its /path/to/ first), every
# model, package and service checked in seconds, then the DAG under the profile's launchers (all visible GPUs).
PROFILE ?= profiles/full-scale.yaml
full-scale: $(STAMP)
	$(PY) -m pip install --quiet -c constraints.txt -e ".[full]"
	$(PY) -m cocoins.tools.profile apply $(PROFILE)
	$(PY) -m cocoins.preflight
	dvc repro

preflight: $(STAMP)
	$(PY) -m cocoins.preflight

# The full-scale profile through the real `dvc repro` on random-weight models of the real architectures, in a
# scratch copy (cocoins/rehearsal/run.py). On a GPU machine: REHEARSE_ARGS="--depth full --device cuda
# --resolution 1024 --images 16 --processes 1".
REHEARSE_ARGS ?= --depth reduced --device cpu --processes 2
rehearse: $(STAMP)
	$(PY) -m cocoins.rehearsal.run --out out/rehearsal $(REHEARSE_ARGS)

bench: $(STAMP)
	$(PY) benchmarks/pipeline.py

plots: $(STAMP)
	dvc plots show --open=false

clean-venv:
	rm -rf $(VENV)
