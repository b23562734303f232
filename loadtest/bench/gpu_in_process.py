"""Parts 1 and 2 of `make bench-gpu`, in process: the handler's predict on the CPU against the device
(parity), its images/s at several batch sizes; and what the GPU is."""
from __future__ import annotations

import shutil
import statistics
import subprocess
import time
from contextlib import contextmanager
from typing import Callable, Iterator

import numpy as np

from export import artifacts
from loadtest.bench.workload import Workload
from settings.model_serving import SERVING

PARITY_BATCH = 16
PARITY_TARGET = 1e-5
BATCHES = (1, 16, 64, 256)

Log = Callable[[str], None]


class _InlinedPredict:
    """ImageClassifierHandler.predict's three lines, used only where the handler cannot be imported
    (no TorchServe `ts` package); the results record that it was."""

    def __init__(self):
        self.model = self.device = None

    def predict(self, images: np.ndarray) -> np.ndarray:
        import torch
        with torch.inference_mode():
            batch = torch.from_numpy(images).unsqueeze(1).to(self.device)
            return self.model(batch).float().cpu().numpy()


def handler_on(model: str, device) -> tuple[object, str]:
    """(our handler with `model` on `device`, as TorchServe's initialize leaves it for predict, and
    what it is): the model loaded from artifacts/ and moved there (loadtest/stage_costs.py's way)."""
    try:
        from handlers.classifier_handler import ImageClassifierHandler
        handler, what = ImageClassifierHandler(), "handlers/classifier_handler.py ImageClassifierHandler.predict"
    except ImportError as err:
        handler, what = _InlinedPredict(), f"its predict inlined (the handler cannot be imported: {err})"
    handler.metadata = artifacts.manifest(model)
    handler.labels = handler.metadata.get("labels", [])
    handler.model = artifacts.scripted_model(model).to(device)
    if hasattr(handler, "use_device"):
        handler.use_device(device)  # as initialize does: TF32 off on CUDA
    else:
        handler.device = device
    return handler, what


def predict_all(handler, images: np.ndarray, batch: int = PARITY_BATCH) -> np.ndarray:
    return np.concatenate([handler.predict(images[i:i + batch]) for i in range(0, len(images), batch)])


@contextmanager
def tf32_off() -> Iterator[None]:
    """cuDNN's and cuBLAS's TF32 off for the block (PyTorch allows it for convolutions by default)."""
    import torch
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before


def parity(model: str, work: Workload, device) -> dict:
    """The handler's predict on the CPU and on `device`, batches of 16, every image of `work`."""
    import torch
    cpu, what = handler_on(model, torch.device("cpu"))
    dev, _ = handler_on(model, device)
    images = work.canonical
    p_cpu = predict_all(cpu, images)
    p_dev = predict_all(dev, images)
    out = {"images": int(len(images)), "batch": PARITY_BATCH, "predict": what,
           "max_abs_diff": float(np.abs(p_cpu - p_dev).max()),
           "top1_agree": int((p_cpu.argmax(1) == p_dev.argmax(1)).sum())}
    try:
        with tf32_off():
            p_strict = predict_all(dev, images)
        out["max_abs_diff_tf32_off"] = float(np.abs(p_cpu - p_strict).max())
    except Exception as err:  # noqa: BLE001 - a torch that refuses the legacy flags costs this column only
        out["tf32_off_error"] = f"{type(err).__name__}: {err}"
    out["pass"] = bool(out["max_abs_diff"] <= PARITY_TARGET)
    return out


def timed_rates(predict, canonical: np.ndarray, batch: int, repeats: int, min_s: float) -> list[float]:
    """images/s of `predict` on batches of `batch` real images, `repeats` runs of >= min_s each."""
    n = len(canonical)
    batches = [canonical[np.arange(i, i + batch) % n] for i in range(0, max(n, 4 * batch), batch)][:32]
    for b in batches[:3] * 2:  # TorchScript's profiling runs, cuDNN's first calls
        predict(b)
    rates = []
    for _ in range(repeats):
        calls, started = 0, time.perf_counter()
        while True:
            predict(batches[calls % len(batches)])
            calls += 1
            elapsed = time.perf_counter() - started
            if elapsed >= min_s and calls >= 3:
                break
        rates.append(calls * batch / elapsed)
    return rates


def in_process(work: Workload, device, repeats: int, min_s: float, log: Log) -> dict:
    """lenet5's predict at each batch size, the CPU (one torch thread, as served) and `device`."""
    import torch
    torch.set_num_threads(SERVING[work.model].torch_threads)
    out = {"model": work.model, "batches": list(BATCHES), "repeats": repeats, "min_s": min_s,
           "cpu_threads": torch.get_num_threads(), "cpu": {}, "device": {}}
    for side, dev in (("cpu", torch.device("cpu")), ("device", device)):
        handler, out["predict"] = handler_on(work.model, dev)
        for batch in BATCHES:
            rates = timed_rates(handler.predict, work.canonical, batch, repeats, min_s)
            out[side][str(batch)] = {"images_per_s": statistics.median(rates), "runs": [round(r, 1) for r in rates]}
            log(f"  {side:<6} batch {batch:<4} {statistics.median(rates):12,.0f} images/s")
    return out


def nvidia_smi(*query: str) -> list[str] | None:
    """nvidia-smi's output lines for `query`, None when it is missing or fails."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, *query], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    lines = [line.strip() for line in out.stdout.splitlines() if line.strip()]
    return lines if out.returncode == 0 and lines else None


def gpu_info(device) -> dict:
    """The GPU's name and memory, CUDA (torch's build), cuDNN, the driver; {} for the CPU."""
    import torch
    info: dict = {"torch_cuda": torch.version.cuda}
    if device.type != "cuda":
        return info
    try:
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                    compute_capability=f"{props.major}.{props.minor}", gpu_count=torch.cuda.device_count(),
                    cudnn=torch.backends.cudnn.version())
    except Exception as err:  # noqa: BLE001 - informative only
        info["gpu_error"] = str(err)
    driver = nvidia_smi("--query-gpu=driver_version", "--format=csv,noheader")
    if driver:
        info["driver"] = driver[0]
    else:
        try:
            import ctypes
            version = ctypes.c_int()
            ctypes.CDLL("libcuda.so.1").cuDriverGetVersion(ctypes.byref(version))
            info["driver"] = f"supports CUDA {version.value // 1000}.{version.value % 1000 // 10} (libcuda)"
        except (OSError, AttributeError):
            pass
    return info
