# Reliability and security: RELIABILITY.md.
# The soak's server uses SOAK_PORT_BASE..+2 (default 28080-28082) and build/soak/, so it runs beside
# `make serve`.
##@ Reliability and security (mk/reliability.mk, RELIABILITY.md)
## SOAK_DURATION=600 SOAK_RATE=100  make soak's seconds and requests/s (e.g. SOAK_DURATION=1800 SOAK_RATE=200)
## SOAK_WARMUP=180 SOAK_CLIENTS=8    seconds before memory is read; concurrent clients
## SOAK_PORT_BASE=28080             the soak's own server uses it..+2
SOAK_PORT_BASE ?= 28080
SOAK_DURATION ?= 600
SOAK_WARMUP ?= 180
SOAK_RATE ?= 100
SOAK_CLIENTS ?= 8

.PHONY: soak soak-smoke serve-secure

soak: $(SERVABLE) ## 10 min of steady load on its own server; fails on an error, a restart or >10% memory growth
	$(RUN) -m reliability.soak --duration $(SOAK_DURATION) --warmup $(SOAK_WARMUP) --rate $(SOAK_RATE) \
	  --clients $(SOAK_CLIENTS) --port-base $(SOAK_PORT_BASE) --out results/soak.json

# Seconds are too few to judge memory growth (the JVM is still sizing its heap): errors and
# restarts are what the smoke checks; the growth limit only catches a runaway.
soak-smoke: $(SERVABLE) ## the same for seconds (make test runs it)
	$(RUN) -m reliability.soak --duration 8 --warmup 3 --rate 40 --clients 4 --max-growth 1.0 \
	  --port-base $(SOAK_PORT_BASE) --run-dir build/soak-smoke --out results/soak-smoke.json

serve-secure: $(SERVABLE) nginx ## make serve over HTTPS (a local CA in .run/tls/) with API keys at the proxy (.run/api_keys.json)
	@$(RUN) -m serving.launcher start --model-store $(STORE) --tls --api-keys .run/api_keys.json
