"""`make bench-gpu`'s held-out images: read from the data sets once, then from a pack
(build/bench-gpu/inputs.npz) that a GPU machine without the data sets or scikit-learn can use."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

import numpy as np

from export import artifacts
from loadtest.bench.workload import Workload
from settings.model_serving import SERVING

ROOT = Path(__file__).resolve().parents[2]
INPUTS = ROOT / "build" / "bench-gpu" / "inputs.npz"

Log = Callable[[str], None]


def _sha(model: str) -> str:
    return str(artifacts.manifest(model).get("sha256", ""))


def workload_from(model: str, pngs: tuple[bytes, ...], canonical: np.ndarray, true_labels: tuple[str, ...]) -> Workload:
    """A Workload from stored images: the model's own top-1 is computed here, on this machine's CPU."""
    import torch
    labels = list(artifacts.manifest(model)["labels"])
    scripted = artifacts.scripted_model(model)
    with torch.inference_mode():
        probabilities = scripted(torch.from_numpy(canonical).unsqueeze(1)).numpy()
    return Workload(model, pngs, canonical, [labels[i] for i in probabilities.argmax(axis=1)], true_labels, scripted)


def read_pack(path: Path, models) -> dict[str, Workload]:
    """The models whose images the pack holds for their current model.pt (sha256), as Workloads."""
    if not Path(path).is_file():
        return {}
    out = {}
    with np.load(path, allow_pickle=False) as pack:
        for model in models:
            if f"{model}__canonical" not in pack.files or str(pack[f"{model}__sha256"]) != _sha(model):
                continue
            pngs: tuple[bytes, ...] = ()
            if f"{model}__png_bytes" in pack.files:
                data, ends = pack[f"{model}__png_bytes"].tobytes(), pack[f"{model}__png_ends"]
                starts = np.concatenate([[0], ends[:-1]])
                pngs = tuple(data[s:e] for s, e in zip(starts, ends))
            out[model] = workload_from(model, pngs, pack[f"{model}__canonical"],
                                       tuple(str(x) for x in pack[f"{model}__true_labels"]))
    return out


def write_pack(path: Path, works: dict[str, Workload], png_models=tuple(SERVING)) -> None:
    """Every model's canonical images, true labels and sha256; PNGs for `png_models` (sent: lenet5 in
    part 3, every model in part 4)."""
    arrays = {}
    for model, work in works.items():
        arrays[f"{model}__canonical"] = work.canonical
        arrays[f"{model}__true_labels"] = np.asarray(work.true_labels, dtype=str)
        arrays[f"{model}__sha256"] = np.asarray(_sha(model))
        if model in png_models and work.pngs:
            arrays[f"{model}__png_bytes"] = np.frombuffer(b"".join(work.pngs), dtype=np.uint8)
            arrays[f"{model}__png_ends"] = np.cumsum([len(p) for p in work.pngs]).astype(np.int64)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(path).with_suffix(".tmp.npz")
    np.savez_compressed(temporary, **arrays)
    temporary.replace(path)


def limited(work: Workload, limit: int | None) -> Workload:
    if limit is None:
        return work
    return dataclasses.replace(work, pngs=work.pngs[:limit], canonical=work.canonical[:limit],
                               model_labels=work.model_labels[:limit], true_labels=work.true_labels[:limit])


def load_workloads(models, limit: int | None, inputs: Path, log: Log) -> tuple[dict[str, Workload], dict[str, str]]:
    """({model: Workload}, {model: why it is missing}): from the pack when it holds the model, else
    from the data sets (then, all images read, the pack is written for the next machine)."""
    works: dict[str, Workload] = {}
    try:
        works = read_pack(inputs, models)
    except (OSError, ValueError, KeyError) as err:
        log(f"  {inputs} unreadable ({err}); reading the data sets")
    if works:
        log(f"  held-out images of {', '.join(works)} from {inputs}")
    missing: dict[str, str] = {}
    loaded = {}
    for model in models:
        if model in works:
            continue
        try:
            loaded[model] = Workload.load(model, limit, SERVING[model].torch_threads)
        except (OSError, ValueError, ImportError, KeyError) as err:  # DataSetMissing is a FileNotFoundError
            missing[model] = f"{type(err).__name__}: {err}"
            log(f"  {model}: no held-out images: {missing[model]}")
    works.update(loaded)
    if loaded and limit is None:  # a pack holds every image
        try:
            write_pack(inputs, works)
            log(f"  packed the held-out images of {', '.join(works)} into {inputs}")
        except OSError as err:
            log(f"  could not write {inputs}: {err}")
    return {m: limited(works[m], limit) for m in models if m in works}, missing
