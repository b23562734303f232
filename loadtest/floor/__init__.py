"""The floor of `make bench`: FastAPI + uvicorn serving lenet5 in its own virtualenv (app.py, requirements.txt)."""
