# Load testing and benchmarks: loadtest/README.md, BENCHMARKS.md.
##@ Load testing and benchmarks (mk/loadtest.mk, loadtest/README.md, BENCHMARKS.md)
## USERS=16 SPAWN_RATE=4 DURATION=30s  make loadtest's Locust users, users started per second, run time
## HOST=http://host:8080           the server make loadtest drives (default: make serve's, 127.0.0.1:INFERENCE_PORT)
## LOADTEST_OUT=dir                make loadtest's results (default results/loadtest/<date-time>/)
## BENCH_ARGS="--rounds 5"         more options for python -m loadtest.bench (loadtest/bench/cli.py)
## BENCH_PORT_BASE=38100           the benchmark's own servers use it..+40 (0: ports the OS says are free)
## BENCH_SMOKE_OUT=dir             where make bench-smoke writes (default results/bench-smoke)
## TUNE='handler b32d5w1t1 noop'   make bench-tune's variants: handler (as served; alias ours), noop, b<batch>d<ms>w<workers>t<threads>[+async][+tslog][+cpu][+upstream: TorchServe's own batcher]
## PEERS_ARGS="--rounds 1"         more options for python -m loadtest.bench.peers (make bench-peers)
## BENCH_GPU_ARGS="--duration 2"   more options for python -m loadtest.bench.gpu (make bench-gpu, bench-gpu-rehearsal)
USERS ?= 16
SPAWN_RATE ?= 4
DURATION ?= 30s
LOADTEST_OUT ?=
BENCH_ARGS ?=
BENCH_GPU_ARGS ?=
BENCH_SMOKE_OUT ?= results/bench-smoke
BENCH_PORT_BASE ?= 38100
export BENCH_PORT_BASE
# HOST only when given on the command line (many shells export HOST=<this machine's name>)
LOADTEST_HOST := $(if $(filter command line,$(origin HOST)),$(HOST))

.PHONY: loadtest bench bench-smoke floor-venv

# The floor's own virtualenv, rebuilt when its pinned requirements or .venv change; the e2e tests run it,
# the unit tests not. It reads .venv's packages after its own (a .pth line), so pip finds torch, numpy,
# pillow and scipy already there at the versions both files pin (tests/unit/test_bench_floor.py) and
# installs only FastAPI, uvicorn and theirs: the same floor, without a second 700 MB copy of torch.
FLOOR_VENV := build/floor-venv
FLOOR_REQUIREMENTS := loadtest/floor/requirements.txt
FLOOR_STAMP := $(FLOOR_VENV)/.installed-$(shell { cat $(FLOOR_REQUIREMENTS); echo $(VENV_STAMP); } | md5sum | cut -c1-12)
floor-venv: $(FLOOR_STAMP) ## the floor's own virtualenv (FastAPI, uvicorn; torch and numpy shared with .venv): build/floor-venv
$(FLOOR_STAMP): $(FLOOR_REQUIREMENTS) $(VENV_STAMP)
	rm -rf $(FLOOR_VENV)
	$(PYTHON_SYS) -m venv $(FLOOR_VENV)
	$(PY) -c "import sysconfig; print(sysconfig.get_paths()['purelib'])" \
	  > $$($(FLOOR_VENV)/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")/tinyserve-venv.pth
	$(FLOOR_VENV)/bin/python -m pip install --quiet --disable-pip-version-check --no-compile -r $(FLOOR_REQUIREMENTS)
	@$(FLOOR_VENV)/bin/python -m compileall -qq -j 0 $$($(FLOOR_VENV)/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])") || true
	touch $@
test test-e2e: $(FLOOR_STAMP)

# The peers' own virtualenvs, like the floor's; never built by make test (their e2e tests skip without them).
PEERS_VENV := build/peers-venv
peer_stamp = $(PEERS_VENV)/$(1)/.installed-$(shell md5sum < loadtest/peers/$(1)-requirements.txt | cut -c1-12)
define peer_venv
	rm -rf $(PEERS_VENV)/$(1)
	$(PYTHON_SYS) -m venv $(PEERS_VENV)/$(1)
	$(PEERS_VENV)/$(1)/bin/python -m pip install --quiet --disable-pip-version-check -r loadtest/peers/$(1)-requirements.txt
	touch $@
endef
LITSERVE_STAMP := $(call peer_stamp,litserve)
PYTRITON_STAMP := $(call peer_stamp,pytriton)
$(LITSERVE_STAMP): loadtest/peers/litserve-requirements.txt
	$(call peer_venv,litserve)
$(PYTRITON_STAMP): loadtest/peers/pytriton-requirements.txt
	$(call peer_venv,pytriton)
peers-venv: $(LITSERVE_STAMP) $(PYTRITON_STAMP) ## the peers' own virtualenvs (LitServe, PyTriton): build/peers-venv/<peer>

# Locust's own reports: locust_*.csv and report.html; exit 1 on a transport or contract error.
loadtest: $(VENV_STAMP) ## Locust, headless, against a running server; checks every answer, fails on errors
	@out="$(or $(LOADTEST_OUT),results/loadtest/$$(date +%Y%m%d-%H%M%S))"; mkdir -p "$$out" && set -x && \
	  $(VENV)/bin/locust -f loadtest/locustfile.py --headless --users $(USERS) --spawn-rate $(SPAWN_RATE) \
	  --run-time $(DURATION) $(if $(LOADTEST_HOST),--host $(LOADTEST_HOST)) --only-summary --stop-timeout 5 \
	  --loglevel WARNING --csv "$$out/locust" --html "$$out/report.html"

bench: $(SERVABLE) $(FLOOR_STAMP) ## lenet5 on its own servers, the floor and phone photos; rewrites BENCHMARKS.md
	$(RUN) -m loadtest.bench --command "make bench$(if $(BENCH_ARGS), BENCH_ARGS='$(BENCH_ARGS)')" $(BENCH_ARGS)

bench-smoke: $(SERVABLE) $(FLOOR_STAMP) ## the same, seconds long, into BENCH_SMOKE_OUT (make test runs it)
	$(RUN) -m loadtest.bench --smoke --command "make bench-smoke" --out $(BENCH_SMOKE_OUT)/BENCHMARKS.md \
	  --plot $(BENCH_SMOKE_OUT)/benchmarks.png --results $(BENCH_SMOKE_OUT) --build $(BENCH_SMOKE_OUT)/build

# The sweep behind settings/model_serving.py's values (variants: make help's TUNE line, loadtest/bench/tuning.py).
TUNE ?= handler b16d2w1t1 b32d1w1t1 b16d1w1t2 b16d1w2t1 handler+tslog noop
.PHONY: bench-tune
bench-tune: $(SERVABLE) ## our handler under the TUNE settings side by side, interleaved; prints a table
	$(RUN) -m loadtest.bench --command "make bench-tune TUNE='$(TUNE)'$(if $(BENCH_ARGS), BENCH_ARGS='$(BENCH_ARGS)')" --tune $(TUNE) $(BENCH_ARGS)

# Our lenet5 (row 3), the floor and the peers (LitServe, PyTriton) side by side; writes BENCHMARKS-PEERS.md.
.PHONY: bench-peers peers-venv
bench-peers: $(SERVABLE) $(FLOOR_STAMP) $(LITSERVE_STAMP) $(PYTRITON_STAMP) ## row 3, the floor, LitServe and PyTriton side by side; rewrites BENCHMARKS-PEERS.md
	$(RUN) -m loadtest.bench.peers --command "make bench-peers$(if $(PEERS_ARGS), PEERS_ARGS='$(PEERS_ARGS)')" $(PEERS_ARGS)

# What each stage of our handler costs per image, in process (the floor under rows 3 and 5).
.PHONY: bench-stages
bench-stages: $(EXPORTS) ## what each stage of our handler costs per image, in process
	$(RUN) -m loadtest.stage_costs --command "make bench-stages"

# Without a CUDA device make bench-gpu says so and exits 0 before building anything (loadtest/bench/gpu.py).
.PHONY: bench-gpu bench-gpu-rehearsal
bench-gpu: $(VENV_STAMP) ## on a CUDA machine: parity, in process, 1/2/4 workers per GPU; writes BENCHMARKS-GPU.md (else skips)
	@if $(RUN) -c 'import sys, torch; sys.exit(not torch.cuda.is_available())'; then \
	  $(MAKE) --no-print-directory $(SERVABLE) && \
	  $(RUN) -m loadtest.bench.gpu --command "make bench-gpu$(if $(BENCH_GPU_ARGS), BENCH_GPU_ARGS='$(BENCH_GPU_ARGS)')" $(BENCH_GPU_ARGS); \
	else $(RUN) -m loadtest.bench.gpu; fi

bench-gpu-rehearsal: $(SERVABLE) ## make bench-gpu on the CPU, labelled rehearsal (no GPU), into results/bench-gpu-rehearsal/
	$(RUN) -m loadtest.bench.gpu --cpu-rehearsal \
	  --command "make bench-gpu-rehearsal$(if $(BENCH_GPU_ARGS), BENCH_GPU_ARGS='$(BENCH_GPU_ARGS)')" $(BENCH_GPU_ARGS)
