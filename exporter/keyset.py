"""Compact sets and maps of 64-bit keys, for de-duplication and the resume index.

A set of (app_id, session_id) tuples costs 200+ bytes a pair (tuple, two str, set slot), so a
million pairs would take a quarter of the spec's 300 MB. Here a pair is one 64-bit digest
(key_of) in an open-addressing table kept at most half full: 16-32 bytes a key for KeySet and
32-64 for KeyIndex (which adds a 64-bit value), with 1.5 times that for an instant while the
table doubles. Two distinct pairs share a key with odds about n**2 / 2**65: 3e-8 at a million
pairs, 3e-6 at ten million; the price would be one pair treated as a duplicate of another.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator
from hashlib import blake2b

_MIN_SLOTS = 16  # a power of two, as _slot() needs
_MASK64 = (1 << 64) - 1
# Fibonacci hashing spreads structured keys (small or sequential ints) over the whole table;
# digests from key_of are uniform already, so this only costs a multiply.
_FIBONACCI = 0x9E3779B97F4A7C15


def key_of(*parts: str) -> int:
    """A 64-bit key for `parts`, never 0 (0 marks an empty slot)."""
    data = "\x00".join(parts).encode("utf-8", "surrogatepass")
    key = int.from_bytes(blake2b(data, digest_size=8).digest(), "big")
    return key or 1


def _zeros(typecode: str, n: int) -> array[int]:
    # Repetition allocates the array once; array(typecode, bytes(...)) would hold both.
    return array(typecode, [0]) * n


def _check(key: int) -> None:
    if not 0 < key <= _MASK64:
        raise ValueError(f"key must be in 1..2**64-1, got {key}")


def _slot(keys: array[int], key: int) -> int:
    """The index of `key` in `keys`, or of the empty slot where it belongs."""
    size = len(keys)
    mask = size - 1
    i = ((key * _FIBONACCI) & _MASK64) >> (65 - size.bit_length())
    while (found := keys[i]) != key and found != 0:
        i = (i + 1) & mask
    return i


class KeySet:
    """A set of keys in 1..2**64-1."""

    __slots__ = ("_keys", "_len")

    def __init__(self) -> None:
        self._keys = _zeros("Q", _MIN_SLOTS)
        self._len = 0

    def add(self, key: int) -> bool:
        """Add `key`; True if it was not there yet."""
        _check(key)
        i = _slot(self._keys, key)
        if self._keys[i] == key:
            return False
        self._keys[i] = key
        self._len += 1
        if 2 * self._len > len(self._keys):
            self._grow()
        return True

    def __contains__(self, key: int) -> bool:
        return 0 < key <= _MASK64 and self._keys[_slot(self._keys, key)] == key

    def __len__(self) -> int:
        return self._len

    def _grow(self) -> None:
        old = self._keys
        self._keys = new = _zeros("Q", 2 * len(old))
        for key in old:
            if key:
                new[_slot(new, key)] = key


class KeyIndex:
    """A map from keys in 1..2**64-1 to signed 64-bit values."""

    __slots__ = ("_keys", "_len", "_values")

    def __init__(self) -> None:
        self._keys = _zeros("Q", _MIN_SLOTS)
        self._values = _zeros("q", _MIN_SLOTS)
        self._len = 0

    def put(self, key: int, value: int) -> None:
        """Map `key` to `value`, replacing any earlier value."""
        _check(key)
        i = _slot(self._keys, key)
        self._values[i] = value  # raises OverflowError before anything changed
        if self._keys[i] == key:
            return
        self._keys[i] = key
        self._len += 1
        if 2 * self._len > len(self._keys):
            self._grow()

    def get(self, key: int) -> int | None:
        if not 0 < key <= _MASK64:
            return None
        i = _slot(self._keys, key)
        return self._values[i] if self._keys[i] == key else None

    def __len__(self) -> int:
        return self._len

    def items(self) -> Iterator[tuple[int, int]]:
        """(key, value) pairs in no particular order; do not put() while iterating."""
        for key, value in zip(self._keys, self._values, strict=True):
            if key:
                yield key, value

    def _grow(self) -> None:
        old_keys, old_values = self._keys, self._values
        self._keys = keys = _zeros("Q", 2 * len(old_keys))
        self._values = values = _zeros("q", len(keys))
        for key, value in zip(old_keys, old_values, strict=True):
            if key:
                i = _slot(keys, key)
                keys[i] = key
                values[i] = value
