# The image built and served for real, with Debian's podman, no Docker and no registry (docker/README.md).
# container-image: podman, runc, debootstrap (apt-get, when missing); a local Debian 12 base image
# (debootstrap, when no CONTAINER_BASE is given); the CPU image from docker/Dockerfile (make docker DOCKER=podman).
# Where podman cannot be used (not Linux, not root, no apt-get) container-image says why and stops
# without failing, and the tests skip with the reason; with CI=true both fail instead.
CONTAINER_DIR := build/container
##@ Container test: podman, no Docker, no registry (mk/container.mk, docker/README.md)
## CONTAINER_BASE=debian:12        a base image instead of the debootstrapped Debian 12 (default: none)
CONTAINER_BASE ?=
CONTAINER_IMAGE = $(call local_image,cpu)

.PHONY: container-image container-test container-clean

container-image: $(SERVABLE) ## build tinyserve:0.1.0-cpu with podman on a local Debian 12 base
	@reason="$$(docker/podman.sh unsupported)"; \
	if [ -n "$$reason" ]; then \
	  if [ "$$CI" = true ]; then echo "make container-image: $$reason; CI=true: the container test must run" >&2; exit 1; fi; \
	  echo "make container-image: skipped: $$reason"; exit 0; \
	fi; \
	set -e; start=$$(date +%s); \
	docker/podman.sh install; \
	base="$(CONTAINER_BASE)"; [ -n "$$base" ] || base=$$(docker/podman.sh base $(CONTAINER_DIR)); \
	$(MAKE) --no-print-directory docker DOCKER=podman VARIANTS=cpu HOST_PIP=1 \
	  DOCKER_BUILD_ARGS="--build-arg UBUNTU_IMAGE=$$base $(DOCKER_BUILD_ARGS)"; \
	echo "make container-image: $(CONTAINER_IMAGE) on $$base in $$(( $$(date +%s) - start )) s," \
	  "$$(CONTAINERS_CONF=$(CURDIR)/docker/containers.conf podman image inspect --format '{{.Size}}' $(CONTAINER_IMAGE)) bytes"

container-test: container-image ## that, then tests/deploy/test_container.py against it running (make test runs it)
	$(RUN) -m pytest -q tests/deploy/test_container.py

container-clean: ## remove the test's images and build/container/
	-CONTAINERS_CONF=$(CURDIR)/docker/containers.conf podman rmi -f $(CONTAINER_IMAGE) localhost/tinyserve-base:bookworm-minbase
	rm -rf $(CONTAINER_DIR)
