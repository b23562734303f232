"""`make bench-gpu` (loadtest/bench/gpu*.py) without a GPU and without a server: the skip, the variants'
GPU settings, what the servers' logs prove, the packed images and the report."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from loadtest.bench import gpu, gpu_inputs, gpu_report, gpu_served
from loadtest.bench.tuning import parse_variant
from tests.support.paths import artifact


def test_without_cuda_it_says_so_and_skips_cleanly(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out, results = tmp_path / "BENCHMARKS-GPU.md", tmp_path / "results"
    assert gpu.main(["--out", str(out), "--results", str(results)]) == 0
    said = capsys.readouterr().out.strip().splitlines()
    assert len(said) == 1 and "no CUDA device" in said[0] and "make bench-gpu skipped" in said[0]
    assert not out.exists() and not results.exists()


def test_cpu_flag_switches_torchserves_gpus_off():
    variant = parse_variant("b16d2w4t1+cpu", "lenet5")
    assert variant.extra["number_of_gpu"] == "0"
    assert variant.server == "tune-b16d2w4t1" and variant.serving.workers == 4 and variant.serving.batch_size == 16
    assert parse_variant("b16d2w1t1+tslog+cpu", "lenet5").extra["number_of_gpu"] == "0"
    assert "number_of_gpu" not in parse_variant("b16d2w1t1", "lenet5").extra  # make bench-tune as before
    with pytest.raises(ValueError, match=r"\+cpu"):
        parse_variant("b16d2w1t1+gpu", "lenet5")


def test_cuda_variants_ask_for_one_gpu_and_cpu_variants_for_none():
    variants = gpu_served.served_variants(["b16d2w1t1", "b16d2w4t1"], ["b16d2w1t1", "b16d2w2t1", "b64d2w2t1"],
                                   rehearsal=False)
    assert list(variants) == ["cpu b16d2w1t1", "cpu b16d2w4t1", "cuda b16d2w1t1", "cuda b16d2w2t1", "cuda b64d2w2t1"]
    gpus = {label: v.variant.extra["number_of_gpu"] for label, v in variants.items()}
    assert gpus == {"cpu b16d2w1t1": "0", "cpu b16d2w4t1": "0", "cuda b16d2w1t1": "1", "cuda b16d2w2t1": "1",
                    "cuda b64d2w2t1": "1"}
    assert [v.expect for v in variants.values()] == ["cpu", "cpu", "cuda", "cuda", "cuda"]
    assert variants["cuda b64d2w2t1"].variant.serving.batch_size == 64
    assert variants["cuda b16d2w2t1"].variant.server == "tune-b16d2w2t1"  # the same store as a CPU b16d2w2t1
    # the rehearsal: the same servers, every GPU off, every worker expected on the CPU
    rehearsal = gpu_served.served_variants(["b16d2w1t1"], ["b16d2w2t1"], rehearsal=True)
    assert {v.variant.extra["number_of_gpu"] for v in rehearsal.values()} == {"0"}
    assert {v.expect for v in rehearsal.values()} == {"cpu"}
    with pytest.raises(ValueError):
        gpu_served.served_variants(["b16d2w1t1"], ["b16d2w1t1+cpu"], rehearsal=False)
    with pytest.raises(ValueError):
        gpu_served.served_variants(["b16d2w1t1"], ["handler"], rehearsal=False)


def test_torchserves_frontend_is_shown_the_gpu():
    assert gpu_served.frontend_gpu_env(None, nvidia_smi_ok=False)[0] == "0"
    assert gpu_served.frontend_gpu_env(None, nvidia_smi_ok=True)[0] is None
    assert gpu_served.frontend_gpu_env("0,1", nvidia_smi_ok=False)[0] is None
    value, note = gpu_served.frontend_gpu_env("GPU-5d3c1e2a", nvidia_smi_ok=True)
    assert value is None and note.startswith("warning")


def test_worker_devices_come_from_the_handlers_ready_lines(tmp_path):
    (tmp_path / "console.log").write_text(
        "2026-11-26T00:00:00,000 [INFO ] main org.pytorch.serve.util.ConfigManager - Number of GPUs: 1\n"
        "2026-11-26T00:00:05,000 [INFO ] W-9000-lenet5_1.0-stdout MODEL_LOG - lenet5 ready on cuda:0: input "
        "(32, 32), 10 labels, 1 torch threads\n"
        "2026-11-26T00:00:05,100 [INFO ] W-9001-lenet5_1.0-stdout MODEL_LOG - lenet5 ready on cuda:0: input "
        "(32, 32), 10 labels, 1 torch threads\n"
        "2026-11-26T00:00:05,200 [INFO ] W-9002-fashion_mlp_1.0-stdout MODEL_LOG - fashion_mlp ready on cpu: input "
        "(28, 28), 10 labels, 1 torch threads\n")
    (tmp_path / "access_log.log").write_text("nothing of interest\n")
    found = gpu_served.worker_devices(tmp_path)
    assert found == {"devices": {"lenet5": ["cuda:0", "cuda:0"], "fashion_mlp": ["cpu"]}, "frontend_gpus": 1}
    assert gpu_served.worker_devices(tmp_path / "gone") == {"devices": {}, "frontend_gpus": None}


def test_packed_images_give_the_same_workload(tmp_path):
    artifact("lenet5", "model.pt")
    pngs = (b"\x89PNG one", b"\x89PNG two, longer")
    canonical = np.arange(2 * 32 * 32, dtype=np.uint8).reshape(2, 32, 32)
    work = gpu_inputs.workload_from("lenet5", pngs, canonical, ("1", "7"))
    pack = tmp_path / "inputs.npz"
    gpu_inputs.write_pack(pack, {"lenet5": work})
    back = gpu_inputs.read_pack(pack, ["lenet5", "mnist_net"])
    assert list(back) == ["lenet5"]  # mnist_net is not in it
    assert back["lenet5"].pngs == pngs and back["lenet5"].true_labels == ("1", "7")
    assert np.array_equal(back["lenet5"].canonical, canonical) and back["lenet5"].model_labels == work.model_labels
    assert gpu_inputs.limited(back["lenet5"], 1).pngs == pngs[:1]


def _cell(rps: float, errors: int = 0) -> dict:
    return {"throughput": rps, "throughput_rounds": [rps * 0.98, rps], "p50_ms": 2.0, "p99_ms": 9.5,
            "errors": {"HTTP 503": errors} if errors else {}, "frontend_cpu_us_per_req": 300.0,
            "worker_cpu_us_per_req": 250.0}


def _results(rehearsal: bool = False, served: dict | None = None) -> dict:
    labels = ["cpu b16d2w1t1", "cuda b16d2w1t1", "cuda b16d2w2t1"]
    rps = {"cpu b16d2w1t1": 1000.0, "cuda b16d2w1t1": 2500.0, "cuda b16d2w2t1": 4000.0}
    devices = {"cpu b16d2w1t1": ["cpu"], "cuda b16d2w1t1": ["cuda:0"], "cuda b16d2w2t1": ["cuda:0", "cpu"]}
    default_served = {
        "model": "lenet5", "images": 1996, "variants": labels, "baseline": labels[0], "concurrency": [1, 64],
        "rounds": 2, "duration_s": 3.0, "warmup_s": 1.0, "start_s": 31.0, "load_average_before": [0.5],
        "load_average_after": [9.0],
        "servers": {label: {"kind": label.split()[0], "expect": label.split()[0], "extra": {},
                            "devices": {"lenet5": devices[label]}, "frontend_gpus": 1} for label in labels},
        "cells": {f"{label} C={c}": _cell(rps[label] * (1 if c == 1 else 3), errors=1 if c == 64 else 0)
                  for label in labels for c in (1, 64)},
    }
    return {
        "rehearsal": rehearsal, "device": "cpu" if rehearsal else "cuda:0", "command": "make bench-gpu",
        "started": "2026-11-26T00:00:00+00:00", "finished": "2026-11-26T00:04:00+00:00",
        "gpu_env": "nvidia-smi answers",
        "machine": {"cpu_model": "AMD EPYC", "cpus": 16, "memory_gib": 128.0, "platform": "Linux",
                    "python": "3.12.3", "torch": "2.11.0+cu130", "torchserve": "0.12.0", "java": "openjdk 17"},
        "gpu": {} if rehearsal else {"gpu": "NVIDIA H100 80GB HBM3", "gpu_memory_gib": 79.2,
                                     "compute_capability": "9.0", "torch_cuda": "13.0", "cudnn": 91000,
                                     "driver": "580.65.06"},
        "parity": {
            "lenet5": {"images": 1996, "max_abs_diff": 3.2e-5, "max_abs_diff_tf32_off": 2.0e-7, "top1_agree": 1995,
                       "pass": False},
            "mnist_net": {"images": 1996, "max_abs_diff": 4.0e-7, "max_abs_diff_tf32_off": 3.0e-7,
                          "top1_agree": 1996, "pass": True},
            "fashion_mlp": {"error": "DataSetMissing: no Fashion-MNIST"},
        },
        "in_process": {"model": "lenet5", "batches": [1, 16, 64, 256], "repeats": 5, "min_s": 0.2, "cpu_threads": 1,
                       "cpu": {str(b): {"images_per_s": v} for b, v in zip((1, 16, 64, 256), (14e3, 21e3, 26e3, 29e3))},
                       "device": {str(b): {"images_per_s": v}
                                  for b, v in zip((1, 16, 64, 256), (5e3, 80e3, 300e3, 1.2e6))}},
        "served": served if served is not None else default_served,
    }


def test_the_report_has_three_tables_ratios_and_readings():
    text = gpu_report.render(_results())
    assert text.startswith("# GPU benchmarks\n") and "rehearsal" not in text
    assert "NVIDIA H100 80GB HBM3" in text and "driver 580.65.06" in text and "AMD EPYC, 16 CPUs" in text
    assert "`make bench-gpu`" in text
    assert "| lenet5 | 1,996 | 3.20e-05 | 2.00e-07 | 1,995 / 1,996 | **no** |" in text
    assert "| mnist_net | 1,996 | 4.00e-07 | 3.00e-07 | 1,996 / 1,996 | yes |" in text
    assert "| fashion_mlp | | not measured: DataSetMissing: no Fashion-MNIST |" in text
    assert "with TF32 off all are within it" in text
    assert "| 256 | 29,000 | 1,200,000 | 41.38 |" in text and "CUDA is faster from batch 16 on" in text
    assert "| cpu b16d2w1t1 | cpu x1 (frontend: 1 GPU) | 1 | 1,000 | 980 / 1,000 | 1.00 |" in text
    assert "| cuda b16d2w1t1 | cuda:0 x1 (frontend: 1 GPU) | 64 | 7,500 | 7,350 / 7,500 | 2.50 |" in text
    assert "| C | cuda b16d2w1t1 | cuda b16d2w2t1 |" in text and "| 64 | 2.50 | 4.00 |" in text
    # a worker that reported the CPU on a CUDA server is flagged, in the table and in the reading
    assert "**cuda:0 x1, cpu x1 (frontend: 1 GPU); expected cuda**" in text
    assert "workers NOT where configured: cuda b16d2w2t1" in text and "3 errors in all" in text
    assert sum(line.startswith("Reading: ") for line in text.splitlines()) == 3


def test_the_rehearsal_report_says_so_and_failures_are_reported():
    text = gpu_report.render(_results(rehearsal=True, served={"error": "LaunchError: cuda b16d2w1t1: Java is not on the PATH"}))
    assert text.startswith("# GPU benchmarks: rehearsal (no GPU)\n")
    assert "**rehearsal (no GPU)**" in text and "CUDA stand-in (CPU) images/s" in text
    assert "Not measured: the servers did not start or run" in text and "Java is not on the PATH" in text
    assert "## 1. Parity" in text and "## 2. In process" in text
    stopped = gpu_report.render(_results(served={"status": "running"}))
    assert "the run stopped before the servers' rounds ended" in stopped


def test_servers_preflight_names_everything_missing(monkeypatch, tmp_path):
    monkeypatch.setattr(gpu_served.sys, "executable", str(tmp_path / "python"))
    monkeypatch.setattr(gpu_served.shutil, "which", lambda name: None)
    problems = gpu_served.served_preflight()
    assert any("no torchserve next to" in p for p in problems)
    assert any("no torch-model-archiver next to" in p for p in problems)
    assert any("no java on the PATH" in p for p in problems)


def test_a_failed_server_start_still_writes_parity_and_in_process(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(gpu_served, "served_preflight", lambda: ["no java on the PATH (test)"])
    out, results = tmp_path / "BENCHMARKS-GPU.md", tmp_path / "results"
    code = gpu.main(["--cpu-rehearsal", "--limit", "16", "--repeats", "1", "--min-time", "0.01",
                     "--inputs", str(tmp_path / "inputs.npz"), "--out", str(out), "--results", str(results)])
    assert code == 0
    text = out.read_text()
    assert text.startswith("# GPU benchmarks: rehearsal (no GPU)")
    assert "| lenet5 | 16 | 0.00e+00 | 0.00e+00 | 16 / 16 | yes |" in text
    assert "| 256 |" in text and "no java on the PATH (test)" in text
    assert "## 4." in text and text.count("no java on the PATH (test)") == 2  # part 4 started no server either
    assert "error: the served part failed" in capsys.readouterr().err
    assert len(list(results.glob("bench-gpu-*.json"))) == 1
    assert not (tmp_path / "inputs.npz").exists()  # --limit: no pack of a part of the images
