# Load testing and benchmarks: loadtest/, BENCHMARKS.md. README "Load testing and benchmarks".
#   make loadtest [USERS=16] [SPAWN_RATE=4] [DURATION=30s] [HOST=http://host:port] [LOADTEST_OUT=dir]
#                        Locust, headless, against a running server (default: `make serve`'s, 127.0.0.1
#                        on INFERENCE_PORT); results in LOADTEST_OUT (default results/loadtest/<date-time>/)
#   make bench [BENCH_ARGS="--rounds 5"]   the five-row benchmark of lenet5; starts its own servers on
#                        BENCH_PORT_BASE (38100)..+22 and rewrites BENCHMARKS.md and loadtest/benchmarks.png
#   make bench-smoke [BENCH_SMOKE_OUT=results/bench-smoke]   the same, seconds long, into that folder
#                        (tests/test_loadtest.py runs it in make test)
USERS ?= 16
SPAWN_RATE ?= 4
DURATION ?= 30s
LOADTEST_OUT ?=
BENCH_ARGS ?=
BENCH_SMOKE_OUT ?= results/bench-smoke
BENCH_PORT_BASE ?= 38100
export BENCH_PORT_BASE
# HOST only when given on the command line (many shells export HOST=<this machine's name>)
LOADTEST_HOST := $(if $(filter command line,$(origin HOST)),$(HOST))

.PHONY: loadtest bench bench-smoke

loadtest: $(VENV_STAMP)
	$(RUN) -m loadtest.run_loadtest --users $(USERS) --spawn-rate $(SPAWN_RATE) --run-time $(DURATION) \
	  $(if $(LOADTEST_HOST),--host $(LOADTEST_HOST)) $(if $(LOADTEST_OUT),--results $(LOADTEST_OUT))

bench: $(ARCHIVES)
	$(RUN) -m loadtest.bench --command "make bench$(if $(BENCH_ARGS), BENCH_ARGS='$(BENCH_ARGS)')" $(BENCH_ARGS)

bench-smoke: $(ARCHIVES)
	$(RUN) -m loadtest.bench --smoke --command "make bench-smoke" --out $(BENCH_SMOKE_OUT)/BENCHMARKS.md \
	  --plot $(BENCH_SMOKE_OUT)/benchmarks.png --results $(BENCH_SMOKE_OUT) --build $(BENCH_SMOKE_OUT)/build

# Tuning sweep behind serving/settings.py's values: our handler under other settings, interleaved.
# Variants: ours, noop, b<batch>d<delay ms>w<workers>t<threads>, each optionally +async (async_logging)
# and/or +tslog (TorchServe's own log4j2.xml instead of the container's docker/log4j2.xml). Prints a table; writes results/bench/tune-<date>.json.
TUNE ?= ours b16d5w1t1 b32d2w1t1 b16d2w1t2 b16d2w2t1 ours+tslog noop
.PHONY: bench-tune
bench-tune: $(ARCHIVES)
	$(RUN) -m loadtest.bench --command "make bench-tune TUNE='$(TUNE)'$(if $(BENCH_ARGS), BENCH_ARGS='$(BENCH_ARGS)')" --tune $(TUNE) $(BENCH_ARGS)

# What each stage of our handler costs per image, in process (the floor under rows 3 and 5).
.PHONY: bench-stages
bench-stages: $(EXPORTS)
	$(RUN) -m loadtest.stage_costs --command "make bench-stages"
