"""Part 4 of `make bench-gpu` (loadtest/bench/pod_memory.py) without a server: the GPU overlay's
limits as numbers, the workers they give, one process tree's memory, and the report (read back as
tests/deploy/test_k8s.py reads it)."""
from __future__ import annotations

import subprocess
import sys

import pytest

from loadtest.bench import pod_memory
from serving.workers import workers_per_model
from tests.support.gpu_pod_memory import read_measured


@pytest.mark.parametrize("text, value", [("6Gi", 6 * 2**30), ("512Mi", 512 * 2**20), ("4", 4.0), ("500m", 0.5),
                                         ("1.5", 1.5), ("2G", 2e9)])
def test_kubernetes_quantities(text, value):
    assert pod_memory.quantity(text) == value


@pytest.mark.parametrize("text", ["", "6 GiB", "Gi", "-1", "6gi"])
def test_a_quantity_kubernetes_would_refuse_is_refused(text):
    with pytest.raises(ValueError, match="resource quantity"):
        pod_memory.quantity(text)


def test_the_gpu_overlays_limits_are_read_from_the_manifest(tmp_path):
    limits = pod_memory.pod_limits()
    assert limits["cpus"] >= 1 and limits["memory_bytes"] >= 2**30
    assert workers_per_model(limits["cpus"]) >= 1
    patch = tmp_path / "gpu.yaml"
    patch.write_text("spec:\n  template:\n    spec:\n      containers:\n        - name: torchserve\n"
                     "          resources:\n            limits: {cpu: '8', memory: 12Gi}\n")
    assert pod_memory.pod_limits(patch) == {"cpus": 8.0, "memory_bytes": 12 * 2**30}
    patch.write_text("spec: {}\n")
    with pytest.raises(ValueError, match="no container"):
        pod_memory.pod_limits(patch)


def test_a_process_trees_memory_counts_the_root_and_each_child():
    child = subprocess.Popen([sys.executable, "-c", "import time; x = bytearray(64 << 20); time.sleep(30)"])
    try:
        for _ in range(100):  # until the child holds its 64 MiB
            tree = pod_memory.tree_memory(pod_memory.psutil.Process().pid)
            mine = [w for w in tree["workers"] if w["pid"] == child.pid]
            if mine and mine[0]["rss"] > 64:
                break
            subprocess.run([sys.executable, "-c", "pass"])
        assert mine and mine[0]["rss"] > 64 and 0 < mine[0]["pss"] <= mine[0]["rss"]
        assert tree["frontend"]["rss"] > 0
    finally:
        child.kill()
        child.wait()


def test_the_report_says_what_the_pod_holds_against_its_limit():
    result = {"pod_cpus": 4.0, "pod_memory_mib": 6144, "workers_per_model": 3,
              "models": ["lenet5", "mnist_net", "fashion_mlp"], "number_of_gpu": 1, "all_ready_s": 2.5,
              "answered": {"lenet5": {"requests": 900, "errors": {}}, "mnist_net": {"requests": 800, "errors": {}},
                           "fashion_mlp": {"requests": 700, "errors": {"500": 1}}},
              "memory": {"frontend": {"pid": 1, "rss": 400.0, "pss": 390.0},
                         "workers": [{"pid": i, "rss": 900.0, "pss": 500.0} for i in range(9)]},
              "worker_pss_median_mib": 500.0, "worker_pss_max_mib": 500.0, "worker_rss_median_mib": 900.0,
              "total_pss_mib": 4890.0, "share_of_limit": 0.796}
    text = "\n".join(pod_memory.render(result, rehearsal=False))
    assert "3 workers per model" in text and "= 9 workers" in text and "number_of_gpu=1" in text
    assert "| workers | 9 | 900 | 500 | 4,500 |" in text
    assert "4,890 MiB (PSS) of the pod's 6,144 MiB limit (80%)" in text and "1 errors" in text
    assert "Not measured: LaunchError: x" in "\n".join(pod_memory.render({"error": "LaunchError: x"}, False))
    assert "rehearsal" in "\n".join(pod_memory.render(result, rehearsal=True))


def test_the_figures_read_back_from_the_report_are_those_it_wrote():
    result = {"pod_cpus": 4.0, "pod_memory_mib": 12288, "workers_per_model": 3,
              "models": ["lenet5", "mnist_net", "fashion_mlp"], "number_of_gpu": 1, "all_ready_s": 1.0,
              "answered": {"lenet5": {"requests": 10, "errors": {}}},
              "memory": {"frontend": {"pid": 1, "rss": 1085.0, "pss": 1081.0},
                         "workers": [{"pid": i, "rss": 1075.0, "pss": 773.6} for i in range(9)]},
              "worker_pss_median_mib": 773.6, "worker_pss_max_mib": 773.6, "worker_rss_median_mib": 1075.0,
              "total_pss_mib": 8043.4, "share_of_limit": 0.65}
    text = "# GPU benchmarks\n\n" + "\n".join(pod_memory.render(result, rehearsal=False)) + "\n## 5. next\n"
    assert read_measured(text) == {"pod_cpus": 4.0, "workers_per_model": 3, "workers": 9,
                                              "workers_pss_mib": 6962.0, "total_pss_mib": 8043.0}
    assert read_measured("# GPU benchmarks\n") is None
    assert read_measured("\n".join(pod_memory.render({"error": "TimeoutError: x"}, False))) is None
