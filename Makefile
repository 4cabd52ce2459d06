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

.PHONY: venv data-source report test test-slow test-all lint clean-results

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

report: venv data-source
	$(BIN)/snakemake --cores $(CORES) --config experiment=$(EXPERIMENT)
	@echo "Report: $(CURDIR)/reports/$(EXPERIMENT)/comparison.html"

# Fast suite (minutes). The heavy end-to-end runs carry the `slow` marker.
test: venv
	$(BIN)/pytest -m "not slow"

test-slow: venv data-source
	$(BIN)/pytest -m "slow"

lint: venv
	$(BIN)/snakemake --lint
