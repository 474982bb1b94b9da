# One command each on a fresh clone: `make demo`, `make test`. Both set up .venv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Optional dependency groups: the test tools and the Gradio demos; `make setup EXTRAS=` installs the worker only.
EXTRAS ?= test,demo

FLEET_VENV := .venv-fleet
FLEET_STAMP := $(FLEET_VENV)/.installed

.PHONY: setup fleet-setup demo test test-fast bench browser-check rehearse clean

setup: $(STAMP)

# torch is installed on its own first: `pip install torch==2.13.0` picks the CPU build that lies on these
# machines' disk, and the project's `torch>=2.4` is then already satisfied (no multi-GB CUDA download).
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "torch==2.13.0"
	$(PY) -m pip install -q -e ".$(if $(EXTRAS),[$(EXTRAS)])"
	touch $(STAMP)

# The fleet controller's own environment (scale_workers.py): SkyPilot cannot share the worker's venv
# (see requirements-fleet.txt). It runs the repository's modules in place; nothing is installed from here.
fleet-setup: $(FLEET_STAMP)

$(FLEET_STAMP): requirements-fleet.txt
	test -x $(FLEET_VENV)/bin/python || $(PYTHON) -m venv $(FLEET_VENV)
	$(FLEET_VENV)/bin/python -m pip install -q --upgrade pip
	$(FLEET_VENV)/bin/python -m pip install -q -r requirements-fleet.txt
	touch $(FLEET_STAMP)

demo: setup
	$(PY) scripts/run_demo.py

test: setup fleet-setup
	$(PY) -m pytest -q

# The edit loop: everything but the end-to-end runs marked slow (tiny trainings, preemption, many workers).
test-fast: setup fleet-setup
	$(PY) -m pytest -q -m "not slow"

bench: setup
	$(PY) -m bench

# Not part of `test`: it needs Chromium (Debian's /usr/bin/chromium) and renders the TTS demo page headless.
browser-check: setup
	$(PY) scripts/browser_check.py

# Not part of `test`: the default full-size jobs (facebook/w2v-bert-2.0, StableTTS v1.1 + Vocos) on random
# weights seeded into a temporary Hugging Face cache, offline, through the worker (~17 min, ~15 GB, 2 cores).
rehearse: setup
	$(PY) scripts/rehearse_full_size.py

clean:
	rm -rf $(VENV) $(FLEET_VENV) work build *.egg-info
