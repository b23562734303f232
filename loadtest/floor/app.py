"""The floor of `make bench` (issue 15): the FastAPI app anyone would write first, doing our per-image
work (our decode, limits and canonicalize, our exported model.pt, one forward per request, our answer).

    build/floor-venv/bin/python -m uvicorn loadtest.floor.app:app --workers 2   # PYTHONPATH=<repo>
"""
import json
from pathlib import Path

import torch
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from handlers import contract
from handlers.errors import InputError
from handlers.image_decoding import open_image
from handlers.limits import LIMITS
from model_defs.preprocessing import canonicalize

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts" / "lenet5"
META = json.loads((ARTIFACTS / "manifest.json").read_text())
torch.set_num_threads(1)
model = torch.jit.load(str(ARTIFACTS / "model.pt")).eval()  # TorchScript, softmax baked in
app = FastAPI()


@app.post("/predictions/lenet5")
async def predict(request: Request):
    try:
        image = canonicalize(open_image(await request.body(), LIMITS),
                             META["preprocessing"], tuple(META["input_size"]))
    except InputError as err:
        return JSONResponse(err.body(), status_code=err.status)
    with torch.inference_mode():
        probabilities = model(torch.from_numpy(image)[None, None])[0].tolist()
    return contract.prediction(META["name"], META["labels"], probabilities)
