# Reliability and security (RELIABILITY.md, README "Reliability and security").
#   make soak                 steady load on a server of its own for 10 minutes: requests, errors and
#                             resident memory of the frontend and each worker (results/soak.json);
#                             fails on any error, a restarted worker or >10% memory growth
#   make soak SOAK_DURATION=1800 SOAK_RATE=200     longer, harder
#   make soak-smoke           the same for seconds (make test runs it too: tests/test_reliability_soak.py)
#   make serve-secure         `make serve` with token auth on; keys in .run/key_file.json
# The soak's server uses SOAK_PORT_BASE..+2 (default 28080-28082) and build/soak/, so it runs beside
# `make serve`.
SOAK_PORT_BASE ?= 28080
SOAK_DURATION ?= 600
SOAK_WARMUP ?= 180
SOAK_RATE ?= 100
SOAK_CLIENTS ?= 8

.PHONY: soak soak-smoke serve-secure

soak: $(ARCHIVES)
	$(RUN) -m reliability.soak --duration $(SOAK_DURATION) --warmup $(SOAK_WARMUP) --rate $(SOAK_RATE) \
	  --clients $(SOAK_CLIENTS) --port-base $(SOAK_PORT_BASE) --out results/soak.json

# Seconds are too few to judge memory growth (the JVM is still sizing its heap): errors and
# restarts are what the smoke checks; the growth limit only catches a runaway.
soak-smoke: $(ARCHIVES)
	$(RUN) -m reliability.soak --duration 8 --warmup 3 --rate 40 --clients 4 --max-growth 1.0 \
	  --port-base $(SOAK_PORT_BASE) --run-dir build/soak-smoke --out results/soak-smoke.json

serve-secure: $(ARCHIVES)
	@$(RUN) -m serving.launcher start --model-store $(STORE) --token-auth
	@echo "  token auth is on: every call needs -H \"Authorization: Bearer <key>\" (keys: .run/key_file.json, README \"Reliability and security\")"
