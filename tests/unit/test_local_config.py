"""The local config and the launcher's pre-flight checks: clear messages instead of exit code 0.
The console log of a real server: tests/e2e/test_console_log.py."""
import dataclasses
import shutil
import socket
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import pytest

from serving.config import render
from serving.logs import LOG4J_CONFIG
from serving.server import LaunchError, Server, running
from settings.limits import LIMITS
from settings.model_serving import SERVING
from settings.ports import HOST, JOB_QUEUE_SIZE, Ports
from tests.support.paths import MODEL_STORE


def parse(text: str) -> dict:
    return dict(line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))


def test_local_profile_is_loopback_only_with_explicit_security_settings(tmp_path):
    ports = Ports(9180, 9181, 9182)
    config = parse(render("local", tmp_path / "store", ports))
    # behind the proxy (serving/proxy.py), which listens on 9180 and 9182
    assert config["inference_address"] == f"http://{HOST}:{ports.backend_inference}" == f"http://{HOST}:9185"
    assert config["management_address"] == f"http://{HOST}:9181"
    assert config["metrics_address"] == f"http://{HOST}:{ports.backend_metrics}" == f"http://{HOST}:9187"
    unproxied = parse(render("local", tmp_path / "store", ports, proxied=False))  # the benchmark's variants
    assert (unproxied["inference_address"], unproxied["metrics_address"]) == (f"http://{HOST}:9180", f"http://{HOST}:9182")
    assert HOST == "127.0.0.1"
    assert config["disable_token_authorization"] == "true"
    assert config["enable_model_api"] == "false"
    assert config["allowed_urls"].startswith("file://") and "http" not in config["allowed_urls"]
    assert config["metrics_mode"] == "prometheus"
    assert int(config["max_request_size"]) == LIMITS.max_request_bytes
    assert int(config["job_queue_size"]) == JOB_QUEUE_SIZE
    assert config["load_models"] == ",".join(f"{n}.mar" for n in SERVING)


@pytest.mark.parametrize("profile", ["local", "production"])
def test_the_worker_hands_request_bodies_to_the_handler_unparsed(tmp_path, profile):
    """TorchServe's frontend sets its workers' TS_DECODE_INPUT_REQUEST from this property (default true,
    over any value in the environment): the handler then parses JSON itself, counted first
    (handlers/request_decoding.py), and the worker logs no traceback for a malformed body."""
    assert parse(render(profile, tmp_path / "store"))["decode_input_request"] == "false"


def test_token_auth_can_be_turned_on(tmp_path):
    assert parse(render("local", tmp_path, token_auth=True))["disable_token_authorization"] == "false"


def test_ports_from_env_are_validated():
    assert Ports.from_env({"INFERENCE_PORT": "9000"}).inference == 9000
    ports = Ports.free()
    assert Ports.from_env(ports.to_env()) == ports  # the entrypoint's environment, for tests that run it
    with pytest.raises(ValueError, match="not a TCP port"):
        Ports.from_env({"MANAGEMENT_PORT": "http"})


def test_start_without_archives_says_make_archive(tmp_path):
    with pytest.raises(LaunchError, match="make archive"):
        with running(run_dir=tmp_path / "run", model_store=tmp_path / "empty_store", ports=Ports.free()):
            pass


def test_start_on_a_busy_port_names_the_port(tmp_path):
    with socket.socket() as busy:
        busy.bind((HOST, 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(LaunchError, match=f"inference port {port}.*in use"):
            with running(run_dir=tmp_path / "run", model_store=MODEL_STORE,
                         ports=dataclasses.replace(Ports.free(), inference=port)):
                pass


def test_start_without_java_says_install_a_jre(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(LaunchError, match="Java is not on the PATH"):
        with running(run_dir=tmp_path / "run", model_store=tmp_path, ports=Ports.free()):
            pass


def test_a_stale_pid_file_does_not_block_a_start(tmp_path):
    server = Server(tmp_path, Ports())
    server.tmp_dir.mkdir(parents=True)
    server.pid_file.write_text("999999")  # no such process
    assert server.pid() is None


def test_grpc_is_on_loopback_and_follows_the_http_ports(tmp_path):
    """TorchServe always starts gRPC: two servers must not fight over 7070/7071."""
    config = parse(render("local", tmp_path, Ports(18080, 18081, 18082)))
    assert config["grpc_inference_address"] == "127.0.0.1"
    assert config["grpc_management_address"] == "127.0.0.1"
    assert (config["grpc_inference_port"], config["grpc_management_port"]) == ("17070", "17071")
    assert (Ports().grpc_inference, Ports().grpc_management) == (7070, 7071)
    with pytest.raises(ValueError, match="must all differ"):
        Ports(9000, 9001, 9000)


def test_the_log_config_writes_bounded_files_only():
    text = LOG4J_CONFIG.read_text()  # serving/log4j2.xml, which the launcher passes to TorchServe
    assert 'AppenderRef ref="STDOUT"' not in text
    for log in ("ts_log", "model_log", "access_log", "ts_metrics", "model_metrics"):
        assert f'AppenderRef ref="{log}"' in text, log
        assert f'/{log}.%i.log.gz"' in text, log  # numbered: DefaultRolloverStrategy max="5" bounds them
    assert text.count('<SizeBasedTriggeringPolicy size="100 MB"/>') == text.count('<DefaultRolloverStrategy max="5"/>') == 5
    assert "%d{dd-MMM}" not in text and "TimeBased" not in text


def test_the_log_config_is_torchserves_own_with_only_those_changes():
    """serving/log4j2.xml was derived once from the installed TorchServe's default: same files and
    loggers, so an upgrade that changes them shows here (re-derive it from the jar then)."""
    import ts  # torchserve's package: its jar holds the default

    def outline(root: ET.Element) -> tuple:
        files = sorted((a.get("name"), a.get("fileName")) for a in root.iter("RollingFile"))
        loggers = sorted((lg.get("name"), lg.get("level"), tuple(r.get("ref") for r in lg.iter("AppenderRef")))
                         for lg in root.iter("Logger"))
        return files, loggers

    with zipfile.ZipFile(Path(ts.__file__).parent / "frontend" / "model-server.jar") as jar:
        default = ET.fromstring(jar.read("log4j2.xml"))
    ours = ET.parse(LOG4J_CONFIG).getroot()
    assert outline(ours) == outline(default)
    assert [lg.get("additivity") for lg in ours.iter("Logger") if lg.get("name") == "org.pytorch.serve"] == ["false"]
    assert [r.get("ref") for r in ours.find("Loggers/Root")] == ["ts_log"]
