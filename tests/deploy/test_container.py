"""The image itself, built from docker/Dockerfile and run with podman the way the Kubernetes pod
runs it (k8s/base/deployment.yaml: read-only root filesystem, a tmpfs at /tmp for the emptyDir,
all capabilities dropped, no-new-privileges, the manifest's uid/gid and environment).

The pod mounts its TLS Secret: here a local CA's certificate, so the container speaks HTTPS only.
Against the running container: every model READY through the image's own HEALTHCHECK; held-out
images of every model give the local server's probabilities (1e-5); a bad input gets its 4xx
JSON; /metrics answers; the management port is not reachable from outside the container; every
process runs as the pod's uid with no capabilities; logs go to stdout only; SIGTERM with
requests in flight ends it with exit status 0 within the pod's grace period.

The image comes from `make container-image` (`make container-test` and `make test` run it).
Where podman cannot be used (not Linux, not root) the tests skip and say why; with CI=true they
fail instead. Host ports: three the OS says are free when the container starts (inference,
management, metrics), beside every other test's. Timings: build/container/measured.json.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import requests
import urllib3  # noqa: F401 - the warning filtered below
import yaml

from handlers.contract import check_error, check_prediction
from handlers.png import png_bytes
from model_defs.registry import MODELS
from serving.tls import TLSFiles, local_certificates
from settings.model_serving import SERVING
from settings.ports import Ports
from tests.support.paths import REPO as ROOT

pytestmark = pytest.mark.e2e
# one name per checkout: a container a crashed run left behind is removed by the next run
NAME = f"tinyserve-container-test-{hashlib.sha256(str(ROOT).encode()).hexdigest()[:8]}"
PODMAN_ENV = {**os.environ, "CONTAINERS_CONF": str(ROOT / "docker" / "containers.conf")}
READY_TIMEOUT_S = 180
IMAGES_PER_MODEL = 64
MEASURED = ROOT / "build" / "container" / "measured.json"


def skip_or_fail(reason: str):
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; CI=true: the container test must run")
    pytest.skip(reason)


def podman(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(["podman", *args], capture_output=True, text=True, env=PODMAN_ENV, timeout=timeout)
    if check and result.returncode != 0:
        pytest.fail(f"podman {' '.join(args)} failed ({result.returncode}):\n{result.stdout}{result.stderr}")
    return result


def record(**figures) -> None:
    MEASURED.parent.mkdir(parents=True, exist_ok=True)
    data = json.loads(MEASURED.read_text()) if MEASURED.is_file() else {}
    data.update(figures)
    MEASURED.write_text(json.dumps(data, indent=2) + "\n")


def the_image() -> str:
    result = subprocess.run(["make", "--no-print-directory", "print-image"], capture_output=True, text=True,
                            cwd=ROOT, timeout=60)
    assert result.returncode == 0, result.stderr
    return dict(line.split() for line in result.stdout.splitlines())["cpu"]


@pytest.fixture(scope="module")
def pod():
    """The pod's container spec and its grace period, from the manifest."""
    deployment = yaml.safe_load((ROOT / "k8s" / "base" / "deployment.yaml").read_text())
    spec = deployment["spec"]["template"]["spec"]
    container = spec["containers"][0]
    return {"spec": spec, "container": container,
            "env": {e["name"]: e["value"] for e in container.get("env", [])},
            "grace_s": spec["terminationGracePeriodSeconds"]}


def tls_secret(folder: Path) -> TLSFiles:
    """The tinyserve-tls Secret's files as the pod mounts them (tls.crt, tls.key), from a local CA;
    readable by the container's user, as the Secret volume's defaultMode and fsGroup make them."""
    made = local_certificates(folder / "ca")
    secret = folder / "secret"
    secret.mkdir()
    for source, name in ((made.certificate, "tls.crt"), (made.key, "tls.key")):
        shutil.copyfile(source, secret / name)
        (secret / name).chmod(0o644)
    return TLSFiles(secret / "tls.crt", secret / "tls.key", made.ca)


def run_arguments(pod, image: str, host_ports: Ports, tls: TLSFiles) -> list[str]:
    """`podman run` options that do what the pod's securityContext, volumes and env do."""
    spec, container = pod["spec"], pod["container"]
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert set(mounts) == {"tmp", "tls"} and "emptyDir" in volumes["tmp"], "only /tmp is writable in the pod"
    assert "secret" in volumes["tls"] and mounts["tls"]["readOnly"] is True
    mounts = {name: mount["mountPath"] for name, mount in mounts.items()}
    size = volumes["tmp"]["emptyDir"].get("sizeLimit", "1Gi").replace("Gi", "g").replace("Mi", "m")
    user, group = spec["securityContext"]["runAsUser"], spec["securityContext"]["runAsGroup"]
    ports = Ports(int(pod["env"]["INFERENCE_PORT"]), int(pod["env"]["MANAGEMENT_PORT"]), int(pod["env"]["METRICS_PORT"]))
    args = ["run", "-d", "--name", NAME,
            "--read-only", "--read-only-tmpfs=false", "--tmpfs", f"{mounts['tmp']}:rw,size={size},mode=1777",
            "--cap-drop=all", "--security-opt", "no-new-privileges", "--user", f"{user}:{group}",
            "-v", f"{tls.certificate.parent}:{mounts['tls']}:ro",
            # no systemd here to run the image's HEALTHCHECK on a timer: the test runs it itself
            "--health-interval", "disable",
            # the management port is published too: to show that nothing answers on it from outside
            "-p", f"127.0.0.1:{host_ports.inference}:{ports.inference}",
            "-p", f"127.0.0.1:{host_ports.management}:{ports.management}",
            "-p", f"127.0.0.1:{host_ports.metrics}:{ports.metrics}"]
    for name, value in pod["env"].items():
        args += ["-e", f"{name}={value}"]
    return args + [image]


def container_output(tail: int = 4000) -> str:
    """The end of what the container wrote, stdout and stderr (`podman logs` replays the container's
    stderr on its own: the entrypoint's Python tracebacks land there)."""
    logs = podman("logs", NAME, check=False)
    return f"stdout:\n{logs.stdout[-tail:]}\nstderr:\n{logs.stderr[-tail:]}"


def healthy() -> subprocess.CompletedProcess:
    """The image's own HEALTHCHECK command, run by podman inside the container."""
    return podman("healthcheck", "run", NAME, check=False, timeout=60)


@pytest.fixture(scope="module")
def container(pod, tmp_path_factory):
    if not sys.platform.startswith("linux"):
        skip_or_fail(f"podman runs the image here only on Linux, not {sys.platform}")
    if os.geteuid() != 0:
        skip_or_fail(f"the container test runs podman as root and this is uid {os.geteuid()}")
    if shutil.which("podman") is None:
        skip_or_fail("no podman: `make container-test` (or `make container-image`) installs it")
    image = the_image()
    if podman("image", "exists", image, check=False).returncode != 0:
        pytest.fail(f"no image {image}: run `make container-image` (make container-test and make test do)")
    podman("rm", "-f", "--time", "0", NAME, check=False)
    started = time.monotonic()
    host_ports = Ports.free()
    tls = tls_secret(tmp_path_factory.mktemp("tls"))
    podman(*run_arguments(pod, image, host_ports, tls))
    try:
        ready_s = None
        for _ in range(READY_TIMEOUT_S * 2):
            check = healthy()
            if check.returncode == 0:
                ready_s = time.monotonic() - started
                break
            state = podman("inspect", "--format", "{{.State.Status}}", NAME, check=False).stdout.strip()
            if state != "running":
                pytest.fail(f"the container stopped ({state}) before it was ready:\n" + container_output())
            if time.monotonic() - started > READY_TIMEOUT_S:
                break
            time.sleep(0.5)
        if ready_s is None:
            pytest.fail(f"not ready after {READY_TIMEOUT_S} s: {check.stdout}{check.stderr}\n" + container_output())
        record(ready_s=round(ready_s, 1))
        yield {"image": image, "ready_s": ready_s, "grace_s": pod["grace_s"],
               "inference": f"https://127.0.0.1:{host_ports.inference}",
               "management": f"http://127.0.0.1:{host_ports.management}",
               "metrics": f"https://127.0.0.1:{host_ports.metrics}", "ca": str(tls.ca)}
    finally:
        podman("rm", "-f", "--time", "0", NAME, check=False, timeout=120)


def container_python(code: str) -> str:
    """Run Python in the container, as its user and with its restrictions (podman exec)."""
    return podman("exec", NAME, "python3", "-c", code).stdout


def test_every_model_is_ready_through_the_images_own_healthcheck(container):
    healthcheck = json.loads(podman("image", "inspect", "--format", "{{json .HealthCheck}}", container["image"]).stdout)
    assert (healthcheck or {}).get("Test", [])[-1:] == ["/opt/tinyserve/docker/healthcheck.py"], \
        f"the image has no HEALTHCHECK (built in OCI format?): {healthcheck}"
    result = healthy()
    assert result.returncode == 0, result.stdout + result.stderr
    status = podman("inspect", "--format", "{{.State.Health.Status}}", NAME).stdout.strip()
    assert status == "healthy"
    # what the healthcheck asked, asked here of the management API inside the container
    described = json.loads(container_python(
        "import json, urllib.request\n"
        f"print(json.dumps({{n: json.load(urllib.request.urlopen('http://127.0.0.1:8081/models/' + n, timeout=5))"
        f" for n in {list(SERVING)!r}}}))"))
    for name in SERVING:
        assert any(w["status"] == "READY" for w in described[name][0]["workers"]), described[name]


def test_the_image_keeps_no_build_leftovers(container):
    """No apt lists or caches, nothing in /tmp (hsperfdata_root), no wheels from the build's mount."""
    find = ["run", "--rm", "--health-interval", "disable", "--user", "0", "--entrypoint", "find", container["image"]]
    listing = podman(*find, "/tmp", "/var/tmp", "/var/cache/apt", "/var/lib/apt/lists", "-mindepth", "1").stdout.split()
    assert listing == [], listing
    wheels = podman(*find, "/", "-xdev", "-name", "*.whl").stdout
    assert wheels.strip() == "", wheels


@pytest.mark.parametrize("name", list(MODELS))
def test_held_out_images_get_the_local_servers_probabilities(container, server, held_out, name):
    data = held_out(name)
    bodies = [png_bytes(image) for image in data.raw[:IMAGES_PER_MODEL]]

    def answers(base: str, verify) -> list[dict]:
        url = f"{base}/predictions/{name}"
        with requests.Session() as session, ThreadPoolExecutor(8) as pool:
            responses = list(pool.map(lambda b: session.post(url, data=b, headers={"Content-Type": "image/png"},
                                                             timeout=30, verify=verify), bodies))
        assert all(r.status_code == 200 for r in responses), [r.text for r in responses if r.status_code != 200][:3]
        return [r.json() for r in responses]

    in_container, local = answers(container["inference"], container["ca"]), answers(server.inference_url, True)
    def top_labels(answers: list[dict]) -> list[str]:
        return [check_prediction(answer, data.spec.labels, name) for answer in answers]

    assert top_labels(in_container) == top_labels(local)
    served = np.array([list(a["probabilities"].values()) for a in in_container])
    expected = np.array([list(a["probabilities"].values()) for a in local])
    assert served.shape == (len(bodies), len(data.spec.labels))
    np.testing.assert_allclose(served, expected, rtol=0, atol=1e-5)


def test_a_bad_input_gets_its_4xx_json(container, server):
    for base, verify in ((container["inference"], container["ca"]), (server.inference_url, True)):
        response = requests.post(f"{base}/predictions/lenet5", data=b"this is not a picture",
                                 headers={"Content-Type": "image/png"}, timeout=30, verify=verify)
        assert response.status_code == 415, (base, response.status_code, response.text)
        assert check_error(response.json(), response.status_code) == "not_an_image"
        assert response.headers["Content-Type"].startswith("application/json")


def test_metrics_answer_in_prometheus_format(container):
    response = requests.get(f"{container['metrics']}/metrics", timeout=30, verify=container["ca"])
    assert response.status_code == 200
    assert "ts_inference_requests_total" in response.text
    assert 'model_name="lenet5"' in response.text


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_management_is_not_reachable_from_outside_the_container(container):
    """Published to a host port, and on the container's own address, nothing answers on 8081:
    TorchServe listens on the container's 127.0.0.1 only (the healthcheck reaches it in there)."""
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{container['management']}/models", timeout=5)
    address = podman("inspect", "--format", "{{.NetworkSettings.IPAddress}}", NAME).stdout.strip()
    if address:
        # the certificate names 127.0.0.1 and localhost, not this address: reachability only
        assert requests.get(f"https://{address}:8080/ping", timeout=5, verify=False).status_code == 200
        with pytest.raises(requests.ConnectionError):
            requests.get(f"http://{address}:8081/models", timeout=5)


def test_every_process_runs_as_the_pods_user_with_no_capabilities_on_a_read_only_root(container, pod):
    status = json.loads(container_python(
        "import glob, json\n"
        "procs = {}\n"
        "for path in glob.glob('/proc/[0-9]*/status'):\n"
        "    try: lines = open(path).read().splitlines()\n"
        "    except OSError: continue\n"
        "    fields = dict(l.split(':', 1) for l in lines if ':' in l)\n"
        "    procs[fields['Name'].strip()+'/'+path.split('/')[2]] = {k: fields[k].split() for k in\n"
        "        ('Uid', 'Gid', 'CapEff', 'CapPrm', 'CapBnd', 'NoNewPrivs')}\n"
        "print(json.dumps(procs))"))
    user, group = str(pod["spec"]["securityContext"]["runAsUser"]), str(pod["spec"]["securityContext"]["runAsGroup"])
    names = " ".join(status)
    assert "java" in names and "bash" in names and "python" in names, names
    for process, fields in status.items():
        assert set(fields["Uid"]) == {user} and set(fields["Gid"]) == {group}, (process, fields)
        for caps in ("CapEff", "CapPrm", "CapBnd"):
            assert int(fields[caps][0], 16) == 0, (process, caps, fields)
        assert fields["NoNewPrivs"] == ["1"], (process, fields)
    attempt = podman("exec", NAME, "touch", "/opt/tinyserve/x", check=False)
    assert attempt.returncode != 0 and "Read-only file system" in attempt.stderr, attempt.stderr


def test_logs_go_to_stdout_only(container):
    logs = podman("logs", NAME)
    assert "entrypoint: starting TorchServe" in logs.stdout
    for name in SERVING:
        assert name in logs.stdout, f"nothing about {name} in the container's output"
    # /tmp is the only writable place: no log file there (the root filesystem is read-only)
    files = container_python("import os\nfor d, _, fs in os.walk('/tmp'):\n"
                             "    for f in fs: print(os.path.join(d, f), os.path.getsize(os.path.join(d, f)))")
    log_files = [line for line in files.splitlines() if ".log" in line.split()[0] or "/logs/" in line.split()[0]]
    assert not log_files, log_files


def test_the_frontend_runs_our_batcher(container):
    """The image carries the agent (serving/batcher.py) and Java installs it: the TorchServe in the image
    is the one it was built against."""
    logs = podman("logs", NAME)
    assert "tinyserve batcher: installed" in logs.stdout + logs.stderr, container_output()


def test_sigterm_with_requests_in_flight_exits_0_within_the_grace_period(container, held_out):
    """Last in this file: it stops the container. `podman stop -t <grace>` sends SIGTERM and
    would send SIGKILL after the pod's terminationGracePeriodSeconds."""
    body = png_bytes(held_out("lenet5").raw[0])
    url = f"{container['inference']}/predictions/lenet5"
    outcomes = {"ok": 0, "refused_or_cut": 0, "other": 0}
    lock, stop = threading.Lock(), threading.Event()
    before_stop = threading.Event()

    def client():
        with requests.Session() as session:
            for _ in range(5000):  # bounded; ends much earlier, when the server is gone
                if stop.is_set():
                    return
                try:
                    response = session.post(url, data=body, headers={"Content-Type": "image/png"}, timeout=10,
                                            verify=container["ca"])
                    key = "ok" if response.status_code == 200 else "other"
                except requests.RequestException:
                    key = "refused_or_cut"
                with lock:
                    outcomes[key] += 1
                    if outcomes["ok"] >= 50:
                        before_stop.set()

    threads = [threading.Thread(target=client, daemon=True) for _ in range(8)]
    for thread in threads:
        thread.start()
    try:
        assert before_stop.wait(60), f"no traffic got through before the stop: {outcomes}"
        started = time.monotonic()
        podman("stop", "-t", str(container["grace_s"]), NAME, timeout=container["grace_s"] + 60)
        stop_s = time.monotonic() - started
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    state = json.loads(podman("inspect", "--format", "{{json .State}}", NAME).stdout)
    record(stop_s=round(stop_s, 1), requests_during_stop_test=outcomes)
    assert state["Status"] == "exited", state
    assert state["ExitCode"] == 0, (state, container_output(3000))
    assert stop_s < container["grace_s"], f"stopped after {stop_s:.1f} s, past the {container['grace_s']} s grace period"
    assert outcomes["other"] == 0, outcomes
    logs = podman("logs", NAME).stdout
    assert "entrypoint: stopping TorchServe" in logs and "entrypoint: TorchServe stopped" in logs, logs[-3000:]
