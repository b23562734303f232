# Where the TorchServe worker's CPU goes under load: py-spy on the worker, loadtest/profile_worker.py.
##@ Profiling the worker (mk/profile.mk, loadtest/profile_worker.py)
## PROFILE_ARGS="--duration 8 --concurrency 16"  more options for python -m loadtest.profile_worker
PROFILE_ARGS ?=

.PHONY: profile
profile: $(SERVABLE) ## py-spy on lenet5's worker under 16 requests in flight -> docs/worker-profile.svg, docs/worker-profile.md
	$(RUN) -m loadtest.profile_worker --command "make profile$(if $(PROFILE_ARGS), PROFILE_ARGS='$(PROFILE_ARGS)')" $(PROFILE_ARGS)
