"""LitServe 0.2.19 serving lenet5 with our per-image work, as its documentation shows a user writing it:
a LitAPI whose stages are decode (our open_image, limits and canonicalize), batch, predict (our
exported model.pt, one forward per batch), unbatch and encode (our answer), with LitServe's own
batching (max_batch_size 16, batch_timeout 2 ms, as TorchServe's batchSize and our starting
maxBatchDelay) and one inference worker per core. A request is JSON, {"image": "<base64 PNG or JPEG>"}:
LitServe decodes JSON or forms, not a raw image body.

    build/peers-venv/litserve/bin/python -m loadtest.peers.litserve_app --port 8000 --workers 2   # PYTHONPATH=<repo>
"""
import base64
import binascii

import litserve as ls
import numpy as np
import torch
from fastapi import HTTPException

from handlers.errors import InputError
from loadtest.floor.our_work import answer, canonical_input, load_model
from loadtest.peers import server_arguments

MAX_BATCH_SIZE = 16
BATCH_TIMEOUT_S = 0.002


class Lenet5API(ls.LitAPI):
    def setup(self, device):
        self.model = load_model()

    def decode_request(self, request):
        try:
            body = base64.b64decode(request["image"], validate=True)
        except (KeyError, TypeError, binascii.Error):
            raise HTTPException(400, 'expected JSON {"image": "<base64 PNG or JPEG>"}') from None
        try:
            return canonical_input(body)
        except InputError as err:
            raise HTTPException(err.status, err.body()) from None

    def batch(self, inputs):
        return torch.from_numpy(np.stack(inputs)).unsqueeze(1)

    def predict(self, x):
        with torch.inference_mode():
            return self.model(x)

    def unbatch(self, output):
        return output.tolist()

    def encode_response(self, probabilities):
        return answer(probabilities)


def main() -> None:
    args = server_arguments(__doc__)
    api = Lenet5API(max_batch_size=MAX_BATCH_SIZE, batch_timeout=BATCH_TIMEOUT_S, api_path="/predictions/lenet5")
    server = ls.LitServer(api, accelerator="cpu", workers_per_device=args.workers)
    server.run(host=args.host, port=args.port, generate_client_file=False)


if __name__ == "__main__":
    main()
