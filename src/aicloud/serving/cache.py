"""An opt-in response cache (deployment spec ``cache_bytes`` > 0): LRU, bounded in bytes.

Keys are the sha256 of the canonical input bytes (the route plus the request's validated input,
e.g. the float64 matrix of ``/predict``); values are the encoded response bodies. Only deterministic
routes use it (model ``/predict``); a model's outputs depend on nothing but its inputs.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict


def cache_key(*parts: bytes) -> bytes:
    h = hashlib.sha256()
    for part in parts:
        h.update(len(part).to_bytes(8, "little"))
        h.update(part)
    return h.digest()


class ResponseCache:
    """LRU of ``key → bytes`` holding at most ``max_bytes`` of values (keys count 32 bytes each)."""

    ENTRY_OVERHEAD = 32

    def __init__(self, max_bytes: int) -> None:
        if max_bytes < 0:
            raise ValueError(f"cache_bytes must be >= 0 (0 disables the cache), got {max_bytes}")
        self.max_bytes = max_bytes
        self.size = 0
        self._items: OrderedDict[bytes, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: bytes) -> bytes | None:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: bytes, value: bytes) -> None:
        cost = len(value) + self.ENTRY_OVERHEAD
        if cost > self.max_bytes:
            return  # bigger than the whole cache: never stored
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self.size -= len(old) + self.ENTRY_OVERHEAD
            self._items[key] = value
            self.size += cost
            while self.size > self.max_bytes:
                _, evicted = self._items.popitem(last=False)
                self.size -= len(evicted) + self.ENTRY_OVERHEAD
