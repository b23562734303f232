"""`make bench-stages`: what our handler's stages cost per image, in process, one thread.

    python -m loadtest.stage_costs [--model lenet5] [--images 512] [--repeats 5]

The same held-out PNGs the benchmark sends, through the same functions the handler calls:
read the header, decode the pixels, canonicalise (a serving batch's small pictures as one stack),
one forward pass per serving batch, encode the JSON answer. Each stage is timed over all images,
`--repeats` times; the table gives the median microseconds per image. Their sum is the least CPU
our worker spends per image on top of what TorchServe's own worker protocol costs (row 2 of
BENCHMARKS.md, the no-op handler), a bound on the ratios the targets ask for.

A second table times the handler's whole `handle` (TorchServe's own Context, one PNG per request)
on batches of 1 to the serving batch size: what a worker pays per request when its batches are
that large, every stage run after the others as in a worker. Under load a batch is what is queued
when a worker comes free (serving/java/README.md), often far fewer than batchSize at 16 clients.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from types import SimpleNamespace

import numpy as np

from export import artifacts
from export.heldout import held_out
from handlers.classifier_handler import ImageClassifierHandler, batch_model
from handlers.image_decoding import load_pixels, open_header
from model_defs.canonical_batch import canonicalize_many
from model_defs.preprocessing import canonicalize
from model_defs.registry import get_spec
from settings.limits import LIMITS
from settings.model_serving import SERVING

# the one thing the handler's JSON encoder asks of TorchServe's context
NO_CONTEXT = SimpleNamespace(set_response_content_type=lambda idx, content_type: None)


def median_us_per_image(stage, items, repeats: int) -> float:
    stage(items)  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        stage(items)
        times.append(time.perf_counter() - started)
    return statistics.median(times) / len(items) * 1e6


def measure(model: str, count: int, repeats: int) -> dict[str, float]:
    import torch

    spec, serving = get_spec(model), SERVING[model]
    torch.set_num_threads(serving.torch_threads)
    pngs = list(held_out(model).pngs)
    pngs = (pngs * (count // len(pngs) + 1))[:count]
    handler = ImageClassifierHandler()  # only its predict and encode stages, on the exported model
    handler.metadata = artifacts.manifest(model)
    handler.labels = handler.metadata["labels"]
    handler.input_size = tuple(handler.metadata["input_size"])
    handler.model = artifacts.scripted_model(model)
    handler.use_device("cpu")
    handler.batch_model = batch_model(handler.model, handler.device)  # as initialize sets it

    pixels = [load_pixels(open_header(p, LIMITS)) for p in pngs]
    canonical = np.stack([canonicalize(p, spec.preprocessing, spec.input_size) for p in pixels])
    probabilities = handler.predict(canonical)
    batch = serving.batch_size
    stages = {
        "read the header (PIL open)": lambda _: [open_header(p, LIMITS) for p in pngs],
        "decode the pixels": lambda _: [load_pixels(open_header(p, LIMITS)) for p in pngs],
        f"canonicalise, stacks of {batch}": lambda _: [canonicalize_many(pixels[i:i + batch], spec.preprocessing,
                                                                         spec.input_size)
                                                        for i in range(0, len(pixels), batch)],
        f"forward pass, batches of {batch}": lambda _: [handler.predict(canonical[i:i + batch])
                                                        for i in range(0, len(canonical), batch)],
        "encode the JSON answer": lambda _: [handler._json(NO_CONTEXT, 0, handler.encode(p)) for p in probabilities],
    }
    costs = {name: median_us_per_image(stage, pngs, repeats) for name, stage in stages.items()}
    # "decode the pixels" includes reading the header again: report the decoding alone
    costs["decode the pixels"] -= costs["read the header (PIL open)"]
    # not a stage of ours: what one request at a time costs (the floor's way, and a batch of one's)
    alone = median_us_per_image(lambda _: [canonicalize(p, spec.preprocessing, spec.input_size) for p in pixels],
                                pngs, repeats)
    whole = {size: median_us_per_image(lambda _, size=size: handle_batches(handler, pngs, size), pngs, repeats)
             for size in batch_sizes(batch)}
    return costs, alone, whole


def batch_sizes(batch: int) -> list[int]:
    """1, 2, 4, ... up to the serving batch size, which is always last."""
    sizes = [1 << k for k in range(batch.bit_length()) if 1 << k < batch]
    return sizes + [batch]


def handle_batches(handler: ImageClassifierHandler, pngs: list[bytes], size: int) -> None:
    """Every PNG once, through `handle` in batches of `size` requests, as a worker receives them."""
    from ts.context import Context, RequestProcessor

    context = Context(handler.metadata["name"], None, {"model": {}}, size, None, "0.12.0")
    for start in range(0, len(pngs), size):
        rows = [{"body": png} for png in pngs[start:start + size]]
        context.request_processor = [RequestProcessor({"Content-Type": "image/png"}) for _ in rows]
        handler.handle(rows, context)


def render(model: str, costs: dict[str, float], alone: float, whole: dict[int, float], command: str) -> str:
    lines = [f"Stage costs of our handler for `{model}`, in process, one torch thread "
             f"(`{command}`):", "", "| stage | us per image (median) |", "|---|---|"]
    lines += [f"| {name} | {us:.1f} |" for name, us in costs.items()]
    lines.append(f"| **sum** | **{sum(costs.values()):.1f}** |")
    lines += ["", f"Canonicalising picture by picture (`canonicalize`, as for a batch of one or the floor): "
                  f"{alone:.1f} us per image."]
    lines += ["", "The whole `handle`, one PNG per request, by the requests in a batch:", "",
              "| requests per batch | us per request (median) | x the stage sum |", "|---|---|---|"]
    lines += [f"| {size} | {us:.1f} | {us / sum(costs.values()):.2f} |" for size, us in whole.items()]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="lenet5", choices=list(SERVING))
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--command", default=None, help="the command to record in the table")
    args = parser.parse_args(argv)
    if not artifacts.path(args.model, "model.pt").is_file():
        print(f"error: artifacts/{args.model}/model.pt is missing: run `make export` first", file=sys.stderr)
        return 1
    command = args.command or "python -m loadtest.stage_costs " + " ".join(argv if argv is not None else sys.argv[1:])
    print(render(args.model, *measure(args.model, args.images, args.repeats), command.strip()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
