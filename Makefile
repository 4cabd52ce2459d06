# Two commands on a bare machine with Python 3.11: `make report` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(abspath $(VENV))/bin
STAMP := $(VENV)/.installed
CORES ?= all
EXPERIMENT ?= default
DEBIAN_FASHION_MNIST := /usr/share/datasets/fashion-mnist
# Jobs call `python`: make it the venv's.
export PATH := $(BIN):$(PATH)

.PHONY: venv data-source browser report test test-slow test-slurm lint

venv: $(STAMP)

# Exact pins from requirements.lock; the package itself editable, without re-resolving.
$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --progress-bar off -r requirements.lock
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

# Offline machines: Debian ships Fashion-MNIST (a file:// mirror in config/dataset/fashion_mnist.yaml).
# Installed only when apt is there, we are root and the data is not already present.
data-source:
	@if [ ! -d $(DEBIAN_FASHION_MNIST) ] && command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		echo "Installing Debian's dataset-fashion-mnist (local mirror of Fashion-MNIST)"; \
		apt-get install -y -q dataset-fashion-mnist || { apt-get update -q && apt-get install -y -q dataset-fashion-mnist; }; \
	fi

# Headless Chromium for the report's browser test (Debian's package; skipped when not root or no apt).
browser:
	@if ! command -v chromium >/dev/null && command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		echo "Installing Debian's chromium for the report's browser test"; \
		apt-get install -y -q chromium || { apt-get update -q && apt-get install -y -q chromium; }; \
	fi

# One Snakemake run of the whole DAG. The profile (profiles/default) slows Snakemake's
# self-rescheduling, which otherwise took 3 % of the machine beside every bench job.
report: venv data-source
	$(BIN)/snakemake --cores $(CORES) --config experiment=$(EXPERIMENT)
	@echo "Report: $(CURDIR)/reports/$(EXPERIMENT)/comparison.html"

# Fast suite (minutes). The heavy end-to-end runs carry the `slow` marker.
test: venv browser
	$(BIN)/pytest -m "not slow"

test-slow: venv data-source browser
	$(BIN)/pytest -m "slow and not slurm"

# The smoke experiment through profiles/slurm on a local single-node SLURM that
# tests/slurm/start.sh installs (apt) and starts; needs root. Not yet in CI: see README.
test-slurm: venv
	$(BIN)/pytest -m "slurm"

lint: venv
	$(BIN)/snakemake --lint
