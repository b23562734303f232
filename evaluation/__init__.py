"""Evaluation of the served models on what people really send: a tool layer.

- `evaluation.fonts`: the font families of the typed digits (data, one place) and their Debian packages.
- `export.photos` (shared with the benchmark, loadtest/bench/): held-out MNIST digits rendered as phone
  photos of ink on paper (JPEG 640x480).
- `evaluation.typed`: digits 0-9 typed in those fonts, dark on white (JPEG).
- `evaluation.sets`: every evaluation set as named data: models, (bytes, expected label) rows.
- `evaluation.client`: one model's answers to a set over HTTP; `evaluation.figures`: confusion
  matrices and mistakes; `evaluation.report`: EVALUATION.md.
- `evaluation.evaluate`: sends the sets to a running server and writes EVALUATION.md (the command).

It may import settings, model_defs, handlers, export and serving; nothing but the tests imports it.
"""
