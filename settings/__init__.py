"""Runtime settings, one home: ports and the job queue (ports.py), per-model serving (model_serving.py),
input limits (limits.py), the reverse proxy's timeouts and caps (proxy.py). Read by the handler, the
archive builder, the server and the proxy alike; the image copies this package whole."""
