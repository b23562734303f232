"""Write IDX files (the MNIST format: big-endian header, then uint8 data), optionally gzipped."""
from __future__ import annotations

import gzip
import struct

import numpy as np


def write_idx(path, array, compress=False):
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    (gzip.open if compress else open)(path, "wb").write(data)
