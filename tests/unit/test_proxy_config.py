"""nginx's config as rendered from serving/nginx.conf.template (serving/proxy.py): every placeholder
filled, nginx accepts it in both profiles, the settings reach it, and every answer nginx gives itself
is the JSON error contract. The proxy under real clients: tests/e2e/test_proxy_hostile.py."""
import json
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from handlers.contract import check_error
from serving import proxy, proxy_errors
from serving.api_keys import ApiKeys
from serving.tls import TLSFiles
from settings.limits import LIMITS
from settings.ports import Ports
from settings.proxy import KEYS, PROXY, ProxyLimits
from tests.support.paths import REPO

PROFILES = [  # (container, listen address): make serve, the pod, the entrypoint test on loopback
    (False, "127.0.0.1"), (True, "0.0.0.0"), (True, "127.0.0.1"), (False, "0.0.0.0")]


def location(text: str, name: str) -> list[str]:
    """The directive lines of one location block (its first level), stripped."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == f"location {name} {{")
    end = next(i for i in range(start, len(lines)) if lines[i].strip() == "}")
    return [line.strip() for line in lines[start + 1:end]]


@pytest.mark.parametrize("container, listen", PROFILES)
def test_every_profile_renders_whole_and_nginx_accepts_it(tmp_path, container, listen):
    ports = Ports(19180, 19181, 19182)
    config = proxy.prepare(tmp_path / "proxy", ports, listen_address=listen, container=container)
    text = config.read_text()
    assert "@{" not in text
    assert f"listen {listen}:{ports.inference} backlog=4096;" in text and f"listen {listen}:{ports.metrics};" in text
    assert f"server 127.0.0.1:{ports.backend_inference};" in text and f"server 127.0.0.1:{ports.backend_metrics};" in text
    assert "access_log /dev/stdout " in text and "error_log stderr warn;" in text  # start() pipes them locally
    if shutil.which("nginx") or Path("/usr/sbin/nginx").exists():
        check = subprocess.run([proxy.nginx_bin(), "-t", "-q", "-p", str(config.parent), "-e", "stderr",
                                "-c", str(config)], capture_output=True, text=True)
        assert check.returncode == 0, check.stderr


def test_settings_reach_the_config(tmp_path):
    limits = ProxyLimits(read_timeout_s=7, keepalive_timeout_s=9, worker_connections=100, max_requests_in_flight=11,
                         upstream_keepalive=3, upstream_timeout_s=13, body_buffer_bytes=4096, drain_timeout_s=17,
                         header_line_bytes=2048, logged_request_chars=99)
    text = proxy.render(Ports(), tmp_path, limits=limits, web_root=tmp_path / "web")
    for line in ("client_header_timeout 7s;", "client_body_timeout 7s;", "send_timeout 7s;", "keepalive_timeout 9s;",
                 "worker_connections 100;", "limit_conn per_server 11;", "keepalive 3;", "proxy_read_timeout 13s;",
                 "client_body_buffer_size 4096;", "worker_shutdown_timeout 17s;",
                 f"client_max_body_size {LIMITS.max_request_bytes};", f"root {tmp_path / 'web'};",
                 f"pid {tmp_path / proxy.PID_FILE};", "large_client_header_buffers 4 2048;",
                 '"~^(?<head>[^?]{0,99})" $head;'):
        assert line in text, line
    assert "within 7 s" in text  # the 408's message names the read timeout
    assert PROXY.upstream_timeout_s > 30  # past TorchServe's own response timeout


def test_every_answer_nginx_gives_itself_is_the_json_error_contract(tmp_path):
    text = proxy.render(Ports(), tmp_path)
    bodies = re.findall(r"return (\d{3}) '([^']*)';", text)
    assert len(bodies) >= 2 * (len(proxy_errors.ERRORS) + len(proxy_errors.BACKEND_ERRORS)) + 3
    for status, body in bodies:
        check_error(json.loads(body), int(status))


def test_both_proxied_locations_send_the_request_alike(tmp_path):
    text = proxy.render(Ports(), tmp_path)
    plain, chunked = (location(text, name) for name in ("@torchserve", "@torchserve_chunked"))
    assert [line for line in plain if line.startswith(("proxy_", "limit_conn"))
            and not line.startswith("proxy_intercept_errors")] == \
        [line for line in chunked if line.startswith(("proxy_", "limit_conn"))]
    assert "proxy_intercept_errors on;" not in " ".join(chunked)  # the handler's 400/413 pass through


def test_fill_leaves_nginx_variables_and_named_locations_alone():
    template = "a @{x} $y ${z} @loc;\n    @{block}\n  @{empty}\nend\n"
    assert proxy.fill(template, {"x": 1, "block": "one;\n\ntwo {\n    three;\n}", "empty": ""}) == \
        "a 1 $y ${z} @loc;\n    one;\n\n    two {\n        three;\n    }\nend\n"
    with pytest.raises(ValueError, match="@{x}"):
        proxy.fill(template, {})


def test_the_template_ships_with_serving():
    data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["serving"]
    assert proxy.TEMPLATE.name in data and proxy.TEMPLATE.parent == REPO / "serving"
    assert "COPY serving/ " in (REPO / "docker" / "Dockerfile").read_text()


def test_the_makefile_installs_the_njs_module_where_the_config_loads_it():
    makefile = (proxy.ROOT / "Makefile").read_text()
    assert f"NJS_MODULE := {KEYS.njs_module}" in makefile


def test_api_keys_render_a_map_of_hashes_a_scope_and_a_zone_per_rate(tmp_path):
    keys = ApiKeys()
    keys.add("a", ("lenet5",), 5, 1)
    keys.add("b")
    keys.save(tmp_path / "keys.json")
    text = proxy.render(Ports(), tmp_path, keys_file=tmp_path / "keys.json")
    for key in keys.keys:
        assert f'"{key.sha256}" "{key.name}";' in text
    assert '"~^a/(lenet5)$" 1;' in text and '"~^b/" 1;' in text
    assert f"zone=api_key_r5b1:{KEYS.zone_size} rate=5r/s;" in text and "limit_req zone=api_key_r5b1 burst=1 nodelay;" in text
    assert f"rate={KEYS.rate_per_s}r/s;" in text and text.startswith("# nginx config")
    assert f"load_module {KEYS.njs_module};" in text
    assert "load_module" not in proxy.render(Ports(), tmp_path)  # no keys file: no njs needed


def test_the_saved_render_arguments_read_back_as_they_were(tmp_path):
    """refresh re-renders from render-args.json: ports, limits, certificate files and paths come back equal."""
    limits = ProxyLimits(read_timeout_s=3)
    tls = TLSFiles(tmp_path / "tls.crt", tmp_path / "tls.key")
    proxy.prepare(tmp_path, Ports(19180, 19181, 19182), limits=limits, web_root=tmp_path / "web", tls=tls)
    saved = json.loads((tmp_path / proxy.RENDER_ARGS).read_text())
    assert {name: proxy._from_json(value) for name, value in saved.items()} == {
        "ports": Ports(19180, 19181, 19182), "limits": limits, "web_root": tmp_path / "web", "tls": tls}
