"""What one request may carry: the bounds the handler enforces before and while decoding.

The values travel inside each archive (the handler section of its model-config.yaml, written by
export/archive.py) and the handler reads them back at initialize. TorchServe enforces the body size.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class InputLimits:
    """Bounds on what one request may carry; the handler enforces them, TorchServe the body size."""
    max_request_bytes: int = 8 * 1024 * 1024   # TorchServe max_request_size: larger bodies get 413
    max_image_pixels: int = 16_000_000         # width x height, checked from the header before decoding
    max_image_side: int = 8192                 # pixels, either side
    max_images_per_request: int = 64           # {"instances": [...]}
    max_pixels_per_request: int = 40_000_000   # all images of one request together (a worker's time)
    max_images_per_explanation: int = 16       # /explanations/ costs the worker 1.0-1.5 ms per image (gradient x
                                               # input, 2 PNGs, JSON; predictions 0.15-0.5, BENCHMARKS.md): 16 = ~25 ms
    # Decoding-cost limits, checked from the file's framing before decoding (handlers/image_decoding.py):
    # no file within the limits above should cost a worker more than ~0.5 s of CPU to decode. CPU
    # times from `python -m reliability.crafted [--raw]` on the 2-core development machine (RELIABILITY.md).
    max_jpeg_segments: int = 2_000        # Pillow walks markers in Python: 2M empty COMs (8 MB) cost 1.5 s;
                                          # real files have < 50
    max_jpeg_scans: int = 100             # libjpeg progressive writes 10 scans; 20,000 repeated scans of
                                          # 4000x4000 cost 19 s
    max_jpeg_scan_blocks: int = 40_000_000  # ~4 ns per block per scan (19.4 s / (20,000 x 250,000)): 40M = 0.16 s;
                                            # 10 scans of 4000x4000 4:4:4 visit 3.5M
    max_png_chunks: int = 20_000          # ~1.8 us per chunk in Pillow (500k IDATs: 0.91 s): 20k = 40 ms;
                                          # 8 MB in 8 KB IDATs is 1,000
    max_gif_blocks: int = 20_000          # ~0.19 us per sub-block before the first image (4M: 0.76 s): 20k = 4 ms,
                                          # 5 MB of comments
    max_tiff_tags: int = 1_000            # entries of the first IFD, each parsed in Python; real files have < 100
    max_tiff_tiles: int = 16_384          # ~3.5 us per uncompressed strip/tile (1M 4x4 tiles: 3.5 s): 16k = 57 ms;
                                          # 4000 one-row strips pass
    max_bmp_rle_bytes: int = 1_000_000    # Pillow's RLE decoder is Python, ~0.26 us per 2-byte run
                                          # (7.3 MB: 0.95 s): 1 MB = 0.13 s


LIMITS = InputLimits()
