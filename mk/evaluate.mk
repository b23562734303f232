# Evaluation on what people really send: evaluation/, EVALUATION.md, docs/evaluation/.
# The sets: MNIST held-out PNG, scikit-learn digits, phone photos, typed digits, Fashion-MNIST test.
##@ Evaluation over HTTP (mk/evaluate.mk, EVALUATION.md)
## EVAL_URL=http://127.0.0.1:8080  the server to evaluate (default: make serve's, 127.0.0.1:INFERENCE_PORT)
## EVAL_ARGS="--sets typed,photos --workers 4"  more options for evaluation/evaluate.py
## EVAL_SMOKE_OUT=dir              where make evaluate-smoke writes (default results/evaluate-smoke)
EVAL_URL ?=
EVAL_ARGS ?=
EVAL_SMOKE_OUT ?= results/evaluate-smoke

.PHONY: evaluate evaluate-smoke fonts

fonts: $(VENV_STAMP) ## install the Debian font packages of evaluation/fonts.py that are missing
	@missing="$$($(RUN) -m evaluation.fonts missing)"; \
	  if [ -n "$$missing" ]; then echo "installing the typed digits' fonts: $$missing"; \
	    $(call apt_install,$$missing,the typed digits' fonts); fi

evaluate: fonts | $(VENV_STAMP) $(MNIST) $(FASHION_DATA) ## every set against a RUNNING server; rewrites docs/EVALUATION.md, docs/evaluation/
	$(RUN) -m evaluation.evaluate $(if $(EVAL_URL),--url $(EVAL_URL)) \
	  --command "make evaluate$(if $(EVAL_URL), EVAL_URL=$(EVAL_URL))$(if $(EVAL_ARGS), EVAL_ARGS='$(EVAL_ARGS)')" $(EVAL_ARGS)

evaluate-smoke: fonts | $(VENV_STAMP) $(MNIST) $(FASHION_DATA) ## the same with 20 pictures a set, seconds long (make test runs it)
	$(RUN) -m evaluation.evaluate --smoke $(if $(EVAL_URL),--url $(EVAL_URL)) --out $(EVAL_SMOKE_OUT)/EVALUATION.md \
	  --figures $(EVAL_SMOKE_OUT)/figures --command "make evaluate-smoke" $(EVAL_ARGS)
