"""Embedding cache: a face is analysed once per (image content, analyzer) pair."""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Callable, Hashable

import numpy as np


def image_key(image: np.ndarray) -> str:
    """Content hash of a decoded image `[H, W, 3]` uint8 (shape included)."""
    digest = hashlib.blake2b(np.ascontiguousarray(image).tobytes(), digest_size=16)
    digest.update(str(image.shape).encode())
    return digest.hexdigest()


class LRUCache:
    """A small in-memory least-recently-used cache."""

    def __init__(self, max_items: int = 256):
        self.max_items = max_items
        self._items: OrderedDict = OrderedDict()

    def get_or_compute(self, key: Hashable, compute: Callable[[], object]):
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        value = compute()
        self._items[key] = value
        if len(self._items) > self.max_items:
            self._items.popitem(last=False)
        return value

    def clear(self) -> None:
        self._items.clear()

    def __len__(self) -> int:
        return len(self._items)
