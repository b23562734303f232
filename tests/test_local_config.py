"""The local config and the launcher's pre-flight checks: clear messages instead of exit code 0."""
import socket

import pytest

from reliability import probe
from serving import launcher
from serving.config import render
from handlers.limits import LIMITS
from serving.settings import HOST, JOB_QUEUE_SIZE, Ports
from pipeline.model_config import SERVING
from tests.conftest import MODEL_STORE, TEST_PORT_BASE


def parse(text: str) -> dict:
    return dict(line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))


def test_local_profile_is_loopback_only_with_explicit_security_settings(tmp_path):
    ports = Ports(9180, 9181, 9182)
    config = parse(render("local", tmp_path / "store", ports))
    assert config["inference_address"] == f"http://{HOST}:9180"
    assert config["management_address"] == f"http://{HOST}:9181"
    assert config["metrics_address"] == f"http://{HOST}:9182"
    assert HOST == "127.0.0.1"
    assert config["disable_token_authorization"] == "true"
    assert config["enable_model_api"] == "false"
    assert config["allowed_urls"].startswith("file://") and "http" not in config["allowed_urls"]
    assert config["metrics_mode"] == "prometheus"
    assert int(config["max_request_size"]) == LIMITS.max_request_bytes
    assert int(config["job_queue_size"]) == JOB_QUEUE_SIZE
    assert config["load_models"] == ",".join(f"{n}.mar" for n in SERVING)


def test_token_auth_can_be_turned_on(tmp_path):
    assert parse(render("local", tmp_path, token_auth=True))["disable_token_authorization"] == "false"


def test_ports_from_env_are_validated():
    assert Ports.from_env({"INFERENCE_PORT": "9000"}).inference == 9000
    with pytest.raises(ValueError, match="not a TCP port"):
        Ports.from_env({"MANAGEMENT_PORT": "http"})


def test_start_without_archives_says_make_archive(tmp_path):
    with pytest.raises(launcher.LaunchError, match="make archive"):
        launcher.start(tmp_path / "run", tmp_path / "empty_store", ports=Ports(9190, 9191, 9192))


def test_start_on_a_busy_port_names_the_port(tmp_path):
    store = launcher.Path(__file__).resolve().parent.parent / "model_store"
    with socket.socket() as busy:
        busy.bind((HOST, 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(launcher.LaunchError, match=f"inference port {port}.*in use"):
            launcher.start(tmp_path / "run", store, ports=Ports(port, port + 1, port + 2))


def test_start_without_java_says_install_a_jre(tmp_path, monkeypatch):
    monkeypatch.setattr(launcher.shutil, "which", lambda name: None)
    with pytest.raises(launcher.LaunchError, match="Java is not on the PATH"):
        launcher.start(tmp_path / "run", tmp_path, ports=Ports(9190, 9191, 9192))


def test_a_stale_pid_file_does_not_block_a_start(tmp_path):
    server = launcher.Server(tmp_path, Ports())
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


def test_the_log_config_writes_bounded_files_only(tmp_path):
    text = launcher.log_config(launcher.Server(tmp_path, Ports())).read_text()
    assert 'AppenderRef ref="STDOUT"' not in text
    for log in ("ts_log", "model_log", "access_log", "ts_metrics", "model_metrics"):
        assert f'AppenderRef ref="{log}"' in text, log
        assert f'/{log}.%i.log.gz"' in text, log  # numbered: DefaultRolloverStrategy max="5" bounds them
    assert text.count('<SizeBasedTriggeringPolicy size="100 MB"/>') == text.count('<DefaultRolloverStrategy max="5"/>') == 5
    assert "%d{dd-MMM}" not in text and "TimeBased" not in text


@pytest.mark.e2e
def test_console_log_does_not_grow_with_traffic(server):
    """Java's stdout (logs/console.log) used to repeat every log line, unrotated; now log4j writes
    only to its rolling files and console.log holds start-up output."""
    console, ts_log = server.log_dir / launcher.CONSOLE_LOG, server.log_dir / "ts_log.log"
    before = console.stat().st_size, ts_log.stat().st_size
    for _ in range(20):
        assert probe.post(f"{server.inference_url}/predictions/lenet5", probe.digit_png()).status == 200
    assert console.stat().st_size == before[0] and before[0] < 64 * 1024, console.read_text()[-500:]
    assert ts_log.stat().st_size > before[1]


@pytest.mark.e2e
def test_a_java_that_cannot_start_is_quoted_from_its_console_log(tmp_path):
    """A JVM that fails before log4j starts says why only on its stdout: the launcher quotes it."""
    base = TEST_PORT_BASE + 70
    with pytest.raises(launcher.LaunchError, match="(?s)exited during start-up.*Too small maximum heap"):
        launcher.start(tmp_path / "run", MODEL_STORE, ports=Ports(base, base + 1, base + 2), timeout=60,
                       extra={"vmargs": "-Xmx1k"})
