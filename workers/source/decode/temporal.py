"""Binlog temporal values straight to the documented strings (docs/types.md).

Each factory takes a column's ``fsp`` and returns a function of the column's bytes read as
one big-endian integer (date or time part, then the fraction bytes). Results equal what
mysql-replication's decoding followed by ``workers/source/values.py`` gives, including its
edge cases: an invalid DATETIME is None, an out-of-range fraction raises ValueError (the
library raises there too), a negative fraction counts as none. Date parts are cached: rows
of a backlog share few distinct days.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from functools import cache

from workers.source.values import TWO_DIGITS, fraction, time_text

Decode = Callable[[int], str | None]
_CACHE_LIMIT = 100_000
_EPOCH_ORDINAL = datetime.date(1970, 1, 1).toordinal()
_DATES: dict[int, str] = {}  # DATE packed value -> text
_DATETIME_DAYS: dict[int, str] = {}  # DATETIME2 year*13+month and day bits -> text, "" invalid
_EPOCH_DAYS: dict[int, str] = {}  # days since 1970-01-01 -> text


def fraction_bytes(fsp: int) -> int:
    return (fsp + 1) // 2


def date_text(packed: int) -> str | None:
    """DATE (3 bytes little-endian): zero parts give None, an impossible day raises."""
    text = _DATES.get(packed)
    if text is None:
        year, month, day = packed >> 9, (packed >> 5) & 15, packed & 31
        if not (year and month and day):
            return None
        text = _remember(_DATES, packed, datetime.date(year, month, day).isoformat())
    return text


def datetime2_decoder(fsp: int) -> Decode:
    """DATETIME2: ``YYYY-MM-DD HH:MM:SS[.f]``; None where the library finds no valid datetime.

    The text up to the seconds is kept for the last value seen (consecutive rows mostly share
    their second); one tuple, so a concurrent caller never pairs a value with another's text.
    """
    shift = 8 * fraction_bytes(fsp)
    if fsp == 0 or shift > 16:
        return _datetime2_with(shift, fraction_reader(fsp))
    table = fraction_table(fsp)
    text_of = _fraction_text(fsp)
    mask, limit = (1 << shift) - 1, len(table)
    last: tuple[int, str | None] = (-1, None)

    def decode(value: int) -> str | None:
        nonlocal last
        whole = value >> shift
        seen = last
        if seen[0] != whole:
            seen = last = (whole, _datetime_seconds(whole))
        if seen[1] is None:
            return None
        raw = value & mask
        return seen[1] + (table[raw] if raw < limit else _checked(text_of(raw)))

    return decode


def _datetime2_with(shift: int, fraction_of: Callable[[int], str]) -> Decode:
    last: tuple[int, str | None] = (-1, None)

    def decode(value: int) -> str | None:
        nonlocal last
        whole = value >> shift
        seen = last
        if seen[0] != whole:
            seen = last = (whole, _datetime_seconds(whole))
        return None if seen[1] is None else seen[1] + fraction_of(value)

    return decode


def _datetime_seconds(whole: int) -> str | None:
    day = _DATETIME_DAYS.get((whole >> 17) & 0x3FFFFF)
    if day is None:
        day = _datetime_day((whole >> 17) & 0x3FFFFF)
    hour, minute, second = (whole >> 12) & 31, (whole >> 6) & 63, whole & 63
    if not day or hour > 23 or minute > 59 or second > 59:
        return None
    return f"{day} {TWO_DIGITS[hour]}:{TWO_DIGITS[minute]}:{TWO_DIGITS[second]}"


def _datetime_day(key: int) -> str:
    year, month = divmod(key >> 5, 13)
    try:
        text = datetime.date(year, month, key & 31).isoformat()
    except ValueError:
        text = ""
    return _remember(_DATETIME_DAYS, key, text)


def timestamp2_decoder(fsp: int) -> Decode:
    """TIMESTAMP2 (signed big-endian seconds, then the fraction): UTC ``...THH:MM:SS[.f]Z``;
    the zero timestamp is None. Caches the last second's text, as ``datetime2_decoder``."""
    shift = 8 * fraction_bytes(fsp)
    fraction_of = fraction_reader(fsp)
    zero = fraction(fsp)(0)
    last: tuple[int, str] = (-1, "")

    def decode(value: int) -> str | None:
        nonlocal last
        seconds = value >> shift
        text = fraction_of(value)
        if seconds == 0 and text == zero:
            return None
        seen = last
        if seen[0] != seconds:
            signed = seconds - 0x100000000 if seconds >= 0x80000000 else seconds
            seen = last = (seconds, epoch_text(signed, ""))
        return seen[1] + text + "Z"

    return decode


def timestamp_text(seconds: int) -> str | None:
    """Old TIMESTAMP (unsigned little-endian seconds, no fraction)."""
    return epoch_text(seconds, "") + "Z" if seconds else None


def epoch_text(seconds: int, fraction_text: str) -> str:
    """``YYYY-MM-DDTHH:MM:SS`` of Unix ``seconds`` (UTC) followed by ``fraction_text``."""
    days, rest = divmod(seconds, 86400)
    day = _EPOCH_DAYS.get(days)
    if day is None:
        day = datetime.date.fromordinal(_EPOCH_ORDINAL + days).isoformat()
        _remember(_EPOCH_DAYS, days, day)
    hour, rest = divmod(rest, 3600)
    minute, second = divmod(rest, 60)
    return f"{day}T{TWO_DIGITS[hour]}:{TWO_DIGITS[minute]}:{TWO_DIGITS[second]}{fraction_text}"


def time2_decoder(fsp: int) -> Decode:
    """TIME2: decoded as the library does (sign, 10-bit hours, signed fraction), then the
    same correction and format as ``values.time_converter``."""
    shift = 8 * fraction_bytes(fsp)
    raw_fraction = signed_fraction(fsp)
    frac = fraction(fsp)

    def decode(value: int) -> str:
        packed = value >> shift
        bits, sign = (packed, 1) if packed & 0x800000 else ((-packed) & 0xFFFFFF, -1)
        seconds = ((bits >> 12) & 0x3FF) * 3600 + ((bits >> 6) & 0x3F) * 60 + (bits & 0x3F)
        return time_text(sign * (seconds * 1_000_000 + raw_fraction(value)), frac)

    return decode


def signed_fraction(fsp: int) -> Callable[[int], int]:
    """The library's microseconds from the fraction bytes (low bytes of ``value``): read
    signed, odd fsp divided by 10 toward zero, scaled to microseconds."""
    if fsp == 0:
        return lambda value: 0
    bits = 8 * fraction_bytes(fsp)
    mask, sign_bit = (1 << bits) - 1, 1 << (bits - 1)
    scale: int = 10 ** (6 - fsp)
    odd = fsp % 2 == 1

    def micro(value: int) -> int:
        raw = value & mask
        if raw & sign_bit:
            raw -= mask + 1
        return (int(raw / 10) if odd else raw) * scale

    return micro


def fraction_reader(fsp: int) -> Callable[[int], str]:
    """``.ff..`` for DATETIME2/TIMESTAMP2 from the fraction bytes (low bytes of ``value``): a
    fraction <= 0 is ignored (as the library does), one of a second or more raises ValueError
    (as ``datetime.replace`` does there). Stored values of 1-2 bytes (0-99, 0-9999) are
    looked up in a table."""
    if fsp == 0:
        return lambda value: ""
    text_of = _fraction_text(fsp)
    if fraction_bytes(fsp) > 2:
        return lambda value: _checked(text_of(value))
    table = fraction_table(fsp)
    mask, limit = (1 << (8 * fraction_bytes(fsp))) - 1, len(table)

    def text(value: int) -> str:
        raw = value & mask
        return table[raw] if raw < limit else _checked(text_of(raw))

    return text


def _fraction_text(fsp: int) -> Callable[[int], str | None]:
    micro = signed_fraction(fsp)
    scale: int = 10 ** (6 - fsp)

    def text(value: int) -> str | None:
        us = micro(value)
        if us > 999_999:
            return None
        return "." + str(max(us, 0) // scale).zfill(fsp)

    return text


@cache
def fraction_table(fsp: int) -> tuple[str, ...]:
    """The text of every valid stored fraction of 1 or 2 bytes, sharing equal strings."""
    micro = signed_fraction(fsp)
    scale: int = 10 ** (6 - fsp)
    texts = [f".{digits:0{fsp}d}" for digits in range(10**fsp)]
    return tuple(texts[micro(raw) // scale] for raw in range(100 ** fraction_bytes(fsp)))


def _checked(text: str | None) -> str:
    if text is None:
        raise ValueError("fraction of a second out of range")
    return text


def _remember(cache: dict[int, str], key: int, text: str) -> str:
    if len(cache) >= _CACHE_LIMIT:
        cache.clear()
    cache[key] = text
    return text
