"""`make bench`: one run, one client, six rows that bound our serving stack; writes BENCHMARKS.md.

    python -m loadtest.bench [--duration 5] [--rounds 3] [--concurrency 1 16 64] [--port-base 38100]
                             [--out BENCHMARKS.md] [--plot loadtest/benchmarks.png] [--smoke]

Rows, for one model (lenet5), at each concurrency C (C requests in flight, closed loop):
1. the model alone, in process, one forward pass at a time on a batch of min(C, serving batch
   size) canonical images, with the serving torch threads: the compute limit (images/s);
2. TorchServe with a no-op handler (loadtest/noop_handler.py) and the same model-config: what
   the stack itself costs (req/s);
3. our handler and archive, as served (pipeline/model_config.py);
4. our handler with batchSize 1;
5. our handler, N images per request ({"instances": [...]}, images/s).
Rows 2-5 run against three TorchServe servers started here, each from its own run directory and
ports (--port-base, +10, +20), driven by the same asyncio client (loadtest/client.py). On a
shared machine other load comes and goes, so the cells are interleaved: every round runs every
row at every concurrency once, and each row's figures pool its rounds. Every answer is checked:
status, JSON contract, and top-1 equal to what the exported model itself answers for that image
(so a served answer that differs from the model is an error; the model's own held-out mistakes
are not).

`--tune` runs the same round loop over our handler under other settings instead (tuning.py).

The package, one job a module:
    workload.py   what is sent (held-out PNGs, images per request), the six rows, answer checks
    measure.py    one cell: a client run or forward passes, the server CPU meter, pooled stats,
                  the machine
    servers.py    the variants' model stores and servers (the lifecycle API)
    rounds.py     the one round loop: interleaved rounds over targets, pooled into cells
    benchmark.py  the six-row run -> results (bench.json)
    report.py     targets, BENCHMARKS.md, the plot
    tuning.py     the sweep's variants, run and table
    cli.py        the command line (`python -m loadtest.bench`)
"""
