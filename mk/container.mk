# The image built and served for real, with Debian's podman, no Docker and no registry (docker/README.md).
#   make container-image     podman, runc, debootstrap (apt-get, when missing); a local Debian 12 base
#                            image (debootstrap, when no CONTAINER_BASE is given); the CPU image
#                            $(IMAGE_NAME):$(IMAGE_TAG)-cpu from docker/Dockerfile (make docker DOCKER=podman)
#   make container-test      that, then tests/test_container.py against the running container (`make test` runs it)
#   make container-clean     remove the test's images and build/container/
# Where podman cannot be used (not Linux, not root, no apt-get) container-image says why and stops
# without failing, and the tests skip with the reason; with CI=true both fail instead.
CONTAINER_DIR := build/container
# a base image to build on instead of the debootstrapped Debian 12 (e.g. debian:12 from a registry)
CONTAINER_BASE ?=
CONTAINER_IMAGE = $(call local_image,cpu)

.PHONY: container-image container-test container-clean

container-image: $(ARCHIVES)
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

container-test: container-image
	$(RUN) -m pytest -q tests/test_container.py

container-clean:
	-CONTAINERS_CONF=$(CURDIR)/docker/containers.conf podman rmi -f $(CONTAINER_IMAGE) localhost/tinyserve-base:bookworm-minbase
	rm -rf $(CONTAINER_DIR)
