"""The frontend's JVM options (serving/config.py jvm_options): the common ForkJoinPool's parallelism is
never 1, in both profiles and in the benchmark's servers. At 1, TorchServe 0.12's
CompletableFuture.runAsync() per batch starts and ends a thread per batch (tests/e2e/test_frontend_threads.py
checks that against a running server)."""
import pytest

from loadtest.bench.servers import server_extra
from serving.config import COMMON_POOL_PARALLELISM, PRODUCTION_JVM, common_pool_parallelism, jvm_options, render
from tests.support.properties import parse_properties


@pytest.mark.parametrize("cpus, parallelism", [(0.5, 2), (1, 2), (2, 2), (2.5, 2), (3, 2), (4, 3), (16, 15)])
def test_common_pool_parallelism_is_the_jdk_default_but_never_one(cpus, parallelism):
    assert common_pool_parallelism(cpus) == parallelism


def pool_setting(vmargs: str) -> int:
    values = [int(word.split("=", 1)[1]) for word in vmargs.split() if word.startswith(f"-D{COMMON_POOL_PARALLELISM}=")]
    assert len(values) == 1, vmargs
    return values[0]


@pytest.mark.parametrize("profile", ["local", "production"])
def test_both_profiles_set_the_common_pool(profile, tmp_path):
    vmargs = parse_properties(render(profile, tmp_path))["vmargs"]
    assert pool_setting(vmargs) >= 2
    if profile == "production":  # the container's heap and OOM options stay
        assert set(PRODUCTION_JVM.split()) < set(vmargs.split())
    assert pool_setting(jvm_options(profile, cpus=2)) == 2


def test_the_benchmark_servers_get_the_production_jvm_options():
    for logging in ("container", "torchserve"):
        vmargs = server_extra(logging)["vmargs"]
        assert pool_setting(vmargs) >= 2 and "-XX:+ExitOnOutOfMemoryError" in vmargs
