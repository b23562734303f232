"""`canonicalize_many`: many pictures at once, what `canonicalize` gives each of them.

On small digit pictures (an MNIST-sized 28x28 framed for LeNet-5's 32x32, a 64-image .npy
request) almost all of `canonicalize`'s cost is Python and NumPy's per-call overhead around arrays
of a few hundred pixels, so the small pictures of one shape are framed together as one stack by
`canonicalize_stack`, the code that frames one picture as a stack of one. Larger pictures (photos,
large scans) are framed as they come, so that a batch holds one large picture's pixels at a time.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Sequence

import numpy as np

from model_defs.preprocessing import (
    DIGIT_WORKING_SIDE,
    MNIST_FRAME,
    ImageLike,
    canonicalize,
    canonicalize_stack,
    reduce_large,
    size_error,
    to_grayscale,
)

# A picture waits to be framed with others of its shape when it is a small digit picture (a digit as
# drawn or scanned, not a photo): at most this short side, and DIGIT_WORKING_SIDE long.
STACK_MAX_SHORT_SIDE = 2 * MNIST_FRAME - 1


def canonicalize_many(images: Sequence[ImageLike], kind: str, size: tuple[int, int]) -> np.ndarray:
    """[canonicalize(image, kind, size) for image in images] as one uint8 [N, H, W] array."""
    stack = CanonicalStack(kind, size)
    for image in images:
        stack.add(image)
    return stack.images()


class CanonicalStack:
    """Pictures in, their canonical images out, `canonicalize`'s results bit for bit.

    `add` canonicalises a picture at once unless it is a small digit picture, whose grey levels
    wait for `images` to frame all of one shape together.
    """

    def __init__(self, kind: str, size: tuple[int, int]):
        self.kind, self.size = kind, (int(size[0]), int(size[1]))
        self.pictures: list[np.ndarray] = []  # by slot: canonical, or grey levels waiting for `images`
        self.waiting: dict[tuple[int, int], list[int]] = defaultdict(list)  # shape -> slots
        # a size the kind cannot take raises for each picture as it is added, in its own request
        self.together = kind == "digit" and size_error(kind, self.size) is None

    def add(self, image: ImageLike) -> int:
        """Take a decoded picture (PIL image or 2-D uint8 array); returns its slot in `images()`."""
        gray = reduce_large(to_grayscale(image))
        slot = len(self.pictures)
        if self._waits(gray.shape):
            self.waiting[gray.shape].append(slot)
            self.pictures.append(gray)
        else:
            self.pictures.append(canonicalize_stack(gray[None], self.kind, self.size)[0])
        return slot

    def images(self) -> np.ndarray:
        """uint8 [slots, H, W]: the canonical image of every picture added, in order."""
        out = np.empty((len(self.pictures), *self.size), dtype=np.uint8)
        waiting = {slot for slots in self.waiting.values() for slot in slots}
        for slot, picture in enumerate(self.pictures):
            if slot not in waiting:
                out[slot] = picture
        for slots in self.waiting.values():
            out[slots] = canonicalize_stack(np.stack([self.pictures[slot] for slot in slots]), self.kind, self.size)
        return out

    def canonical(self, slot: int) -> np.ndarray:
        """One slot's canonical image by `canonicalize` alone (what `images()` gives it, picture by picture)."""
        return canonicalize(self.pictures[slot], self.kind, self.size)

    def _waits(self, shape: tuple[int, int]) -> bool:
        """A small digit picture that is not canonical already."""
        return (self.together and shape != self.size
                and min(shape) <= STACK_MAX_SHORT_SIDE and max(shape) <= DIGIT_WORKING_SIDE)
