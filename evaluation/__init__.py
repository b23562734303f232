"""Evaluation of the served models on what people really send (issue 12): a tool layer.

- `evaluation.fonts`: the font families of the typed digits (data, one place) and their Debian packages.
- `export.photos` (shared with the benchmark, loadtest/bench/): held-out MNIST digits rendered as phone
  photos of ink on paper (JPEG 640x480).
- `evaluation.typed`: digits 0-9 typed in those fonts, dark on white (JPEG).
- `evaluation.sets`: every evaluation set as named data: models, (bytes, expected label) rows.
- `evaluation.evaluate`: sends the sets to a running server over HTTP and writes EVALUATION.md.

It may import model_defs, export, serving and loadtest; nothing but the tests imports it.
"""
