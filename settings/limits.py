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
    max_images_per_explanation: int = 16       # an explanation costs a worker several times a prediction
    # Decoding-cost limits, checked from the file's framing before decoding (handlers/image_structure.py),
    # so that no file within the limits above costs a worker more than ~0.5 s of CPU to decode; the
    # costs behind each bound: settings/README.md.
    max_jpeg_segments: int = 2_000        # Pillow walks JPEG markers in Python; real files have < 50
    max_jpeg_scans: int = 100             # each progressive scan decodes the whole picture again
    max_jpeg_scan_blocks: int = 40_000_000  # scans x 8x8 blocks: the progressive decoder's real cost
    max_png_chunks: int = 20_000          # Pillow reads each chunk in Python; 8 MB in 8 KB IDATs is 1,000
    max_gif_blocks: int = 20_000          # sub-blocks before the first image, read in Python
    max_tiff_tags: int = 1_000            # entries of the first IFD, each parsed in Python; real files have < 100
    max_tiff_tiles: int = 16_384          # strips/tiles, each a Python call; 4000 one-row strips pass
    max_bmp_rle_bytes: int = 1_000_000    # Pillow's BMP RLE decoder is Python
    max_exif_bytes: int = 65_536          # a picture's EXIF, wherever it is: one JPEG APP1 segment holds 65,527 B

LIMITS = InputLimits()
