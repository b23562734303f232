"""`make bench`: one run, one client, nine rows that bound our serving stack; writes BENCHMARKS.md.

    python -m loadtest.bench [--duration 5] [--rounds 3] [--concurrency 1 16 64] [--port-base 38100]
                             [--out docs/BENCHMARKS.md] [--plot docs/benchmarks.png] [--smoke]

Rows, for one model (lenet5), at each concurrency C (C requests in flight, closed loop):
1. the model alone, in process, one forward pass at a time on a batch of min(C, serving batch
   size) canonical images, with the serving torch threads: the compute limit (images/s);
2. TorchServe with a no-op handler (loadtest/noop_handler.py) and the same model-config: what
   the stack itself costs (req/s);
3. our handler and archive, as served (settings/model_serving.py);
4. our handler with batchSize 1;
5. our handler, N images per request ({"instances": [...]}, images/s);
6. row 3 behind nginx, as deployed (serving/proxy.py);
7. the floor: FastAPI + uvicorn (loadtest/floor/app.py, its own virtualenv build/floor-venv), one
   worker process per core, doing our per-image work with one forward pass per request;
8. row 3's server sent 640x480 JPEG phone photos of held-out digits (export/photos.py, seeded);
9. the floor sent the same photos.
Rows 7-9 are lenet5's only (the floor serves lenet5). Rows 2-6 run against four TorchServe servers
started here, each from its own run directory and ports (--port-base, +10, +20, +30), the floor on
+40, all driven by the same asyncio client (loadtest/client.py). On a
shared machine other load comes and goes, so the cells are interleaved: every round runs every
row at every concurrency once, and each row's figures pool its rounds. Every answer is checked:
status, JSON contract, and top-1 equal to what the exported model itself answers for that image
(so a served answer that differs from the model is an error; the model's own held-out mistakes
are not).

`--tune` runs the same round loop over our handler under other settings instead (tuning.py).

The package, one job a module:
    workload.py   what is sent (held-out PNGs, images per request, phone photos), the rows, answer checks
    measure.py    one cell: a client run or forward passes, the server CPU meter, pooled stats,
                  the machine
    servers.py    the variants' model stores and servers (the lifecycle API)
    floor.py      the floor's server: uvicorn from its own virtualenv, started, waited for, stopped
    rounds.py     the one round loop: interleaved rounds over targets, pooled into cells
    benchmark.py  the run of the rows -> results (bench.json)
    report.py     targets, BENCHMARKS.md, the plot
    tuning.py     the sweep's variants, run and table
    cli.py        the command line (`python -m loadtest.bench`)
    peers.py      `make bench-peers`: row 3, the floor and other serving stacks side by side
    gpu.py        `make bench-gpu`'s command line and run, its parts in gpu_inputs.py (the held-out
                  images' pack), gpu_in_process.py (parity, predict's images/s), gpu_served.py (the
                  CPU and CUDA servers), pod_memory.py (the GPU pod's memory) and gpu_report.py
"""
