"""The production profile the image runs: TorchServe's config.properties as rendered (security,
allowed_urls, queue, timeouts) and its logging to stdout only.
"""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import pytest

from serving.config import render
from settings.model_serving import SERVING
from settings.ports import JOB_QUEUE_SIZE, Ports
from tests.support.paths import REPO as ROOT
from tests.support.properties import parse_properties


def test_production_config_security_and_queue_choices(dockerfile):
    store = dockerfile["env"]["MODEL_STORE"]
    config = parse_properties(render("production", store))
    assert config["disable_token_authorization"] == "true"  # the cluster controls access (NetworkPolicy)
    assert config["enable_model_api"] == "false"
    # allowed_urls admits the image's own archives and nothing elsewhere (TorchServe matches the
    # whole URL, case-insensitively; traversal tricks: tests/unit/test_security_config.py). Java's
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
    # TorchServe always behind the proxy in production, on loopback (serving/proxy.py listens publicly)
    assert {config["inference_address"], config["metrics_address"]} <= {
        f"http://127.0.0.1:{p}" for p in (Ports().backend_inference, Ports().backend_metrics)}
    with pytest.raises(ValueError, match="behind the proxy"):
        render("production", store, proxied=False)


def test_production_logging_goes_to_stdout_only():
    config = ET.parse(ROOT / "docker" / "log4j2.xml").getroot()
    appenders = list(config.find("Appenders"))
    assert [a.tag for a in appenders] == ["Console"] and appenders[0].get("target") == "SYSTEM_OUT"
    loggers = config.find("Loggers")
    refs = {ref.get("ref") for ref in loggers.iter("AppenderRef")}
    assert refs == {"STDOUT"}
    entrypoint = (ROOT / "docker" / "entrypoint.sh").read_text()
    assert '--log-config "$APP_DIR/docker/log4j2.xml"' in entrypoint
