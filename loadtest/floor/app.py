"""The floor of `make bench`: the FastAPI app anyone would write first, doing our per-image
work (our decode, limits and canonicalize, our exported model.pt, one forward per request, our answer:
loadtest/floor/our_work.py).

    build/floor-venv/bin/python -m uvicorn loadtest.floor.app:app --workers 2   # PYTHONPATH=<repo>
"""
import torch
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from handlers.errors import InputError
from loadtest.floor.our_work import answer, canonical_input, load_model

model = load_model()
app = FastAPI()


@app.post("/predictions/lenet5")
async def predict(request: Request):
    try:
        image = canonical_input(await request.body())
    except InputError as err:
        return JSONResponse(err.body(), status_code=err.status)
    with torch.inference_mode():
        probabilities = model(torch.from_numpy(image)[None, None])[0].tolist()
    return answer(probabilities)
