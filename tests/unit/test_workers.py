"""Workers per model from the CPUs where the server starts (serving/workers.py), into config.properties."""

import pytest

from serving import workers
from serving.config import render
from tests.support.properties import parse_properties


def _cgroup_v2(tmp_path, text):
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "cpu.max").write_text(text)
    return tmp_path


def _cgroup_v1(tmp_path, quota, period):
    (tmp_path / "cpu").mkdir(parents=True)
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text(f"{quota}\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text(f"{period}\n")
    return tmp_path


def test_a_kubernetes_cpu_limit_is_read_from_either_cgroup_version(tmp_path):
    assert workers.cgroup_cpu_limit(_cgroup_v2(tmp_path / "a", "400000 100000\n")) == 4.0
    assert workers.cgroup_cpu_limit(_cgroup_v2(tmp_path / "b", "max 100000\n")) is None
    assert workers.cgroup_cpu_limit(_cgroup_v1(tmp_path / "c", 150000, 100000)) == 1.5
    assert workers.cgroup_cpu_limit(_cgroup_v1(tmp_path / "d", -1, 100000)) is None
    assert workers.cgroup_cpu_limit(tmp_path / "nothing") is None


def test_the_quota_caps_the_cpus_the_process_may_run_on(tmp_path, monkeypatch):
    cgroup_dirs = tmp_path
    monkeypatch.setattr(workers.os, "sched_getaffinity", lambda pid: set(range(16)))
    assert workers.usable_cpus(_cgroup_v2(cgroup_dirs / "a", "400000 100000")) == 4.0
    assert workers.usable_cpus(_cgroup_v2(cgroup_dirs / "b", "max 100000")) == 16.0  # no quota
    monkeypatch.setattr(workers.os, "sched_getaffinity", lambda pid: {0, 1})
    assert workers.usable_cpus(_cgroup_v2(cgroup_dirs / "c", "800000 100000")) == 2.0  # affinity is fewer


@pytest.mark.parametrize("cpus, expected", [(0.5, 1), (1, 1), (2, 2), (4, 3), (6, 5), (16, 12)])
def test_workers_leave_the_frontend_and_the_proxy_their_share(cpus, expected):
    assert workers.workers_per_model(cpus) == expected


def test_workers_per_model_env_overrides_and_is_checked(tmp_path):
    assert workers.configured_workers({"WORKERS_PER_MODEL": "5"}) == 5
    pod = _cgroup_v2(tmp_path, "400000 100000")
    assert workers.configured_workers({}, pod) == workers.workers_per_model(workers.usable_cpus(pod))
    for bad in ("0", "-1", "two", "1.5", "1000"):
        with pytest.raises(ValueError, match="WORKERS_PER_MODEL"):
            workers.configured_workers({"WORKERS_PER_MODEL": bad})


def test_config_properties_carry_the_workers(tmp_path, monkeypatch):
    assert parse_properties(render("local", tmp_path, workers=3))["default_workers_per_model"] == "3"
    monkeypatch.setenv("WORKERS_PER_MODEL", "4")
    assert parse_properties(render("production", tmp_path))["default_workers_per_model"] == "4"
