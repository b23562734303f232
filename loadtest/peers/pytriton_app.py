"""PyTriton 0.7 (Triton Inference Server 2.51) serving lenet5 with our per-image work, as its
documentation shows a user writing it: one `@batch` inference function (our open_image, limits and
canonicalize for each image, then our exported model.pt, one forward per batch) bound with Triton's
dynamic batcher (max batch 16, 2 ms queue delay, as TorchServe's batchSize and our starting
maxBatchDelay) and one instance of it per core. A request is Triton's KServe v2 inference request
(`POST /v2/models/lenet5/infer`) with the encoded image as a BYTES tensor [1, 1] in the binary
extension, as tritonclient sends it; the answer is the probabilities tensor [1, 10].

    build/peers-venv/pytriton/bin/python -m loadtest.peers.pytriton_app --port 8000 --workers 2   # PYTHONPATH=<repo>
"""
import logging
import signal
import sys

import numpy as np
import torch
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig

from loadtest.floor.our_work import META, canonical_input, load_model
from loadtest.peers import PYTRITON_READY, server_arguments

MAX_BATCH_SIZE = 16
QUEUE_DELAY_US = 2000


def make_infer():
    model = load_model()

    @batch
    def infer(image: np.ndarray):
        canonical = np.stack([canonical_input(bytes(row[0])) for row in image])
        with torch.inference_mode():
            return {"probabilities": model(torch.from_numpy(canonical).unsqueeze(1)).numpy()}
    return infer


def main() -> None:
    args = server_arguments(__doc__)
    logging.basicConfig(level=logging.INFO)
    # SIGTERM (how the benchmark stops it) must leave through `with Triton`, which removes its workspace and shm
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    config = TritonConfig(http_address=args.host, http_port=args.port, grpc_address=args.host,
                          grpc_port=args.port + 1, metrics_port=args.port + 2, allow_metrics=False)
    with Triton(config=config) as triton:
        triton.bind(model_name="lenet5", infer_func=[make_infer() for _ in range(args.workers)],
                    inputs=[Tensor(name="image", dtype=bytes, shape=(1,))],
                    outputs=[Tensor(name="probabilities", dtype=np.float32, shape=(len(META["labels"]),))],
                    config=ModelConfig(max_batch_size=MAX_BATCH_SIZE,
                                       batcher=DynamicBatcher(max_queue_delay_microseconds=QUEUE_DELAY_US)),
                    strict=True)
        print(PYTRITON_READY, flush=True)
        triton.serve()


if __name__ == "__main__":
    main()
