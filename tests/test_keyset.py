"""KeySet and KeyIndex behave as a set and a dict of 64-bit keys, in a few dozen bytes a key."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exporter import keyset
from exporter.keyset import KeyIndex, KeySet, key_of

MAX_KEY = 2**64 - 1
# A small pool forces repeats; the full range forces spread; 2**64-1 and 1 are the edges.
keys = st.integers(1, 40) | st.integers(1, MAX_KEY) | st.sampled_from([1, MAX_KEY])
values = st.integers(-(2**63), 2**63 - 1)


def test_key_of_is_a_stable_64_bit_digest() -> None:
    """key_of is deterministic, fits 64 bits, and depends on every part."""
    key = key_of("app", "session")
    assert key == key_of("app", "session")
    assert 0 < key < 2**64
    assert key != key_of("app", "session2")
    assert key != key_of("session", "app")


def test_key_of_keeps_parts_apart() -> None:
    """Parts are joined with NUL, so moving a character across the boundary changes the key."""
    assert key_of("ab", "c") != key_of("a", "bc")


def test_key_of_maps_zero_to_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """A digest of 0 becomes key 1, since 0 marks an empty slot."""

    class ZeroDigest:
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            pass

        def digest(self) -> bytes:
            return bytes(8)

    monkeypatch.setattr(keyset, "blake2b", ZeroDigest)
    assert key_of("anything") == 1


@pytest.mark.parametrize("bad", [0, -1, 2**64])
def test_keys_outside_64_bits_are_refused(bad: int) -> None:
    """Adding 0 or a key outside 64 bits raises, and such a key is never contained."""
    table, index = KeySet(), KeyIndex()
    with pytest.raises(ValueError, match="key must be"):
        table.add(bad)
    with pytest.raises(ValueError, match="key must be"):
        index.put(bad, 1)
    assert bad not in table
    assert index.get(bad) is None
    assert len(table) == len(index) == 0


def test_value_outside_64_bits_changes_nothing() -> None:
    """A value that does not fit a signed 64-bit slot raises and leaves the index as it was."""
    index = KeyIndex()
    index.put(5, 7)
    with pytest.raises(OverflowError):
        index.put(5, 2**63)
    with pytest.raises(OverflowError):
        index.put(6, -(2**63) - 1)
    assert list(index.items()) == [(5, 7)]


@given(st.lists(keys, max_size=300), st.lists(keys, max_size=50))
def test_keyset_matches_a_set(added: list[int], probes: list[int]) -> None:
    """add, in and len agree with a Python set, through any number of growths."""
    table, model = KeySet(), set[int]()
    for key in added:
        assert table.add(key) == (key not in model)
        model.add(key)
        assert len(table) == len(model)
    for key in added + probes:
        assert (key in table) == (key in model)


@given(st.lists(st.tuples(keys, values), max_size=300), st.lists(keys, max_size=50))
def test_keyindex_matches_a_dict(puts: list[tuple[int, int]], probes: list[int]) -> None:
    """put, get, len and items agree with a Python dict, overwrites and growths included."""
    index, model = KeyIndex(), dict[int, int]()
    for key, value in puts:
        index.put(key, value)
        model[key] = value
        assert len(index) == len(model)
    for key in [key for key, _ in puts] + probes:
        assert index.get(key) == model.get(key)
    assert sorted(index.items()) == sorted(model.items())


def test_sequential_keys_survive_many_growths() -> None:
    """Ten thousand sequential keys, the worst case for a plain modulo, are all found."""
    table, index = KeySet(), KeyIndex()
    for key in range(1, 10_001):
        assert table.add(key)
        index.put(key, -key)
    assert len(table) == len(index) == 10_000
    assert all(key in table and index.get(key) == -key for key in range(1, 10_001))
    assert 10_001 not in table
    assert index.get(10_001) is None


def _bytes_per_key(build: Callable[[int], object], n: int) -> tuple[float, float]:
    """(retained, peak) bytes a key while `build(n)` fills a structure with n keys."""
    tracemalloc.start()
    try:
        kept = build(n)
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert kept is not None
    return current / n, peak / n


def _fill_keyset(n: int) -> KeySet:
    table = KeySet()
    for i in range(n):
        table.add(i + 1)
    return table


def _fill_keyindex(n: int) -> KeyIndex:
    index = KeyIndex()
    for i in range(n):
        index.put(i + 1, i)
    return index


def test_keyset_uses_under_64_bytes_a_key() -> None:
    """200,000 keys take under 32 bytes each, and under 64 even while the table doubles."""
    retained, peak = _bytes_per_key(_fill_keyset, 200_000)
    assert retained < 32
    assert peak < 64


def test_keyindex_uses_under_64_bytes_a_key() -> None:
    """200,000 keys with values take under 64 bytes each (96 for an instant while doubling)."""
    retained, peak = _bytes_per_key(_fill_keyindex, 200_000)
    assert retained < 64
    assert peak < 96
