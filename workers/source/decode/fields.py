"""Non-temporal column values that need more than a struct code: DECIMAL, SET, JSON, BIT.

Every function gives exactly what mysql-replication plus ``workers/source/values.py`` gives
for the same bytes (the differential tests in tests/test_row_decoder.py compare the two).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cache
from typing import Any

from pymysqlreplication.json_binary import parse_json

from workers.source.values import normalize_binary_json

# Bytes that hold a group of n leftover decimal digits (MySQL's dig2bytes).
_DIGIT_BYTES = (0, 1, 1, 2, 2, 3, 3, 4, 4, 4)
_GROUP = 1_000_000_000
_SET_CACHE_LIMIT = 4096


def decimal_size(precision: int, scale: int) -> int:
    """Bytes of a binary DECIMAL(precision, scale)."""
    whole = precision - scale
    return (whole // 9 + scale // 9) * 4 + _DIGIT_BYTES[whole % 9] + _DIGIT_BYTES[scale % 9]


def decimal_decoder(precision: int, scale: int) -> Callable[[bytes], str]:
    """Binary DECIMAL -> exact text with ``scale`` fraction digits (``-1234.5600``).

    The format: base-10^9 groups of 4 bytes, with the leftover digits of the integer part
    first and of the fraction last in fewer bytes, big-endian; the top bit is set for
    non-negative values and a negative value has every bit inverted.
    """
    whole = precision - scale
    size = decimal_size(precision, scale)
    top = 1 << (8 * size - 1)
    negative_flip = ((1 << (8 * size)) - 1) ^ top
    fraction_bits = 8 * ((scale // 9) * 4 + _DIGIT_BYTES[scale % 9])
    integer_of = _groups_value(whole // 9, leading_first=True, leftover_digits=whole % 9)
    fraction_of = _groups_value(scale // 9, leading_first=False, leftover_digits=scale % 9)
    fraction_mask = (1 << fraction_bits) - 1

    def text(raw: bytes) -> str:
        value = int.from_bytes(raw, "big")
        if value & top:
            value ^= top
            sign = ""
        else:
            value ^= negative_flip
            sign = "-"
        integer = integer_of(value >> fraction_bits)
        if not scale:
            return f"{sign}{integer}"
        return f"{sign}{integer}.{str(fraction_of(value & fraction_mask)).zfill(scale)}"

    return text


def _groups_value(
    full_groups: int, leading_first: bool, leftover_digits: int
) -> Callable[[int], int]:
    """The number held by ``full_groups`` 9-digit groups plus one leftover group (before them
    for the integer part, after them for the fraction), packed in the bits of one int."""
    leftover_bits = 8 * _DIGIT_BYTES[leftover_digits]
    if full_groups == 0:
        return lambda bits: bits
    leftover_scale: int = 10**leftover_digits

    def value(bits: int) -> int:
        if leading_first:
            total = bits >> (32 * full_groups)
            for shift in range(32 * (full_groups - 1), -1, -32):
                total = total * _GROUP + ((bits >> shift) & 0xFFFFFFFF)
            return total
        total = 0
        for shift in range(32 * (full_groups - 1) + leftover_bits, leftover_bits - 1, -32):
            total = total * _GROUP + ((bits >> shift) & 0xFFFFFFFF)
        return total * leftover_scale + (bits & ((1 << leftover_bits) - 1))

    return value


@cache
def fraction_texts(scale: int) -> tuple[str, ...]:
    """``.ff`` for every value of a one-byte fraction group (scale 1 or 2), as
    ``decimal_decoder`` writes it (values above the scale's digits, which servers do not
    write, included)."""
    return tuple(f".{value:0{scale}d}" for value in range(256))


def set_decoder(labels: Sequence[str]) -> Callable[[int], str]:
    """SET bit mask -> labels joined by ``,`` in declared order (``""`` for the empty set)."""
    cache: dict[int, str] = {}
    labels = tuple(labels)

    def text(mask: int) -> str:
        found = cache.get(mask)
        if found is None:
            found = ",".join([label for i, label in enumerate(labels) if mask >> i & 1])
            if len(cache) >= _SET_CACHE_LIMIT:
                cache.clear()
            cache[mask] = found
        return found

    return text


def binary_json(raw: bytes) -> Any:
    """MySQL binary JSON through the library's parser, with our normalization (str keys)."""
    return normalize_binary_json(parse_json(raw[0], raw[1:]))


def bit_mask(bits: int) -> int:
    """BIT(n) keeps the low n bits of its big-endian bytes (the library ignores the rest)."""
    return (1 << bits) - 1
