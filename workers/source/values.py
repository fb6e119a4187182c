"""Exact Python values for binlog column data, one converter per column type.

The converters take what mysql-replication returns for a non-NULL value and give the format
documented in ``docs/types.md``. They are chosen once per table map (``converter_for``), so
the per-row path is one dict lookup and one call per column that needs converting. Where the
library is wrong (negative fractional TIME, zero TIMESTAMP, YEAR 0000, FLOAT widening, SET as
an unordered set, BIT as a string of digits, BINARY padding, MySQL latin1 bytes, JSON keys as
bytes) the fix lives here.
"""

from __future__ import annotations

import codecs
import datetime
import decimal
import json
import struct
from collections.abc import Callable
from typing import Any

from pymysqlreplication.constants import FIELD_TYPE

Converter = Callable[[Any], Any]

# The library decodes a string column with ``column.character_set_name``; an unknown name
# makes it hand back the raw bytes, which we decode ourselves with the right codec.
RAW_CHARSET = "deltaforge-raw-bytes"
TEXT_TYPES = frozenset(
    {FIELD_TYPE.STRING, FIELD_TYPE.VAR_STRING, FIELD_TYPE.VARCHAR, FIELD_TYPE.BLOB}
)
_US_PER_S = 1_000_000
TWO_DIGITS = tuple(f"{n:02d}" for n in range(100))  # cheaper than a format spec per value
_EPOCH = datetime.datetime(1970, 1, 1)
# MySQL's latin1 is cp1252 with the five bytes cp1252 leaves undefined mapped to C1 controls.
MYSQL_LATIN1 = "".join(bytes([b]).decode("cp1252", "ignore") or chr(b) for b in range(256))


def converter_for(column: Any, charset: str | None, json_text: bool = False) -> Converter | None:
    """The converter for one table-map column, or None when the library value is exact."""
    kind = column.type
    if kind in TEXT_TYPES:
        return _text_converter(kind, charset, getattr(column, "max_length", 0), json_text)
    factory = _BY_TYPE.get(kind)
    return factory(column) if factory is not None else None


def _text_converter(kind: int, charset: str | None, length: int, json_text: bool) -> Converter:
    # An empty value arrives as "" (Python skips the codec lookup for empty bytes).
    if charset == "binary":
        if kind == FIELD_TYPE.STRING:
            return _binary_padder(length)
        return lambda raw: raw or b""
    decode = text_decoder(charset)
    if json_text:
        return lambda raw: parse_json_text(decode(raw) if raw else "")
    return lambda raw: decode(raw) if raw else ""


def text_decoder(charset: str | None) -> Converter:
    """Bytes -> str for a MySQL charset's Python encoding name (as the library reports it)."""
    if charset == "cp1252":
        return decode_mysql_latin1
    try:
        encoding = codecs.lookup(charset or "utf8").name
    except LookupError:
        return bytes
    return lambda raw: raw.decode(encoding, "replace")


def decode_mysql_latin1(raw: bytes) -> str:
    """MySQL latin1 (cp1252 plus the five undefined bytes as C1 controls) never fails."""
    return codecs.charmap_decode(raw, "strict", MYSQL_LATIN1)[0]


def _binary_padder(length: int) -> Converter:
    """BINARY(n) is stored without its trailing zero bytes; SELECT shows them, so do we."""
    return lambda raw: (raw or b"").ljust(length, b"\x00")


def parse_json_text(text: str) -> Any:
    """MariaDB JSON is LONGTEXT: parse it, and keep the text when it is not valid JSON."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def normalize_binary_json(value: Any) -> Any:
    """MySQL binary JSON as the library decodes it, with bytes keys/strings made str."""
    if isinstance(value, dict):
        return {_json_str(k): normalize_binary_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [normalize_binary_json(v) for v in value]
    if isinstance(value, bytes | decimal.Decimal | datetime.date | datetime.timedelta):
        return _json_str(value)
    return value


def _json_str(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, datetime.date):
        return value.isoformat()
    return str(value)


def decimal_text(value: decimal.Decimal) -> str:
    """DECIMAL as an exact string with the declared scale (``1234.5600``)."""
    return format(value, "f")


def float32(value: float) -> float:
    """The shortest decimal that is the same FLOAT (the library widens 1.1 to 1.100000023...)."""
    packed = struct.pack("<f", value)
    for digits in (6, 7, 8, 9):
        candidate = float(f"{value:.{digits}g}")
        if struct.pack("<f", candidate) == packed:
            return candidate
    return value


def year_value(value: int) -> int:
    """YEAR 0000 is stored as 0; the library adds 1900 to it."""
    return 0 if value == 1900 else value


def bit_value(value: str) -> int:
    """BIT as an int (the library returns a string of 0/1 digits)."""
    return int(value, 2)


def date_text(value: datetime.date) -> str:
    return value.isoformat()


def fraction(fsp: int) -> Callable[[int], str]:
    """Microseconds -> ``.ff...`` with exactly ``fsp`` digits (empty for fsp 0)."""
    if not fsp:
        return lambda microsecond: ""
    divisor = 10 ** (6 - fsp)
    return lambda microsecond: "." + str(microsecond // divisor).zfill(fsp)


def datetime_converter(column: Any) -> Converter:
    frac = fraction(getattr(column, "fsp", 0) or 0)

    def convert(value: datetime.datetime) -> str:
        return value.isoformat(" ", "seconds") + frac(value.microsecond)

    return convert


def timestamp_converter(column: Any) -> Converter:
    frac = fraction(getattr(column, "fsp", 0) or 0)

    def convert(value: datetime.datetime) -> str | None:
        if value == _EPOCH:  # 0000-00-00 00:00:00 (epoch 0 is outside TIMESTAMP's range)
            return None
        return value.isoformat("T", "seconds") + frac(value.microsecond) + "Z"

    return convert


def time_converter(column: Any) -> Converter:
    frac = fraction(getattr(column, "fsp", 0) or 0)

    def convert(value: datetime.timedelta) -> str:
        return time_text(value // datetime.timedelta(microseconds=1), frac)

    return convert


def time_text(library_us: int, frac: Callable[[int], str]) -> str:
    """``[-]HH:MM:SS[.f]`` from the library's TIME microseconds (negative fractions fixed)."""
    total_us = fix_negative_time_us(library_us)
    sign = "-" if total_us < 0 else ""
    seconds, micro = divmod(abs(total_us), _US_PER_S)
    minutes, second = divmod(seconds, 60)
    hour, minute = divmod(minutes, 60)
    hours = TWO_DIGITS[hour] if hour < 100 else str(hour)
    return f"{sign}{hours}:{TWO_DIGITS[minute]}:{TWO_DIGITS[second]}{frac(micro)}"


def fix_negative_time_us(total_us: int) -> int:
    """Undo the library's TIME2 decoding of negative values with a fraction.

    TIME2 stores ``floor(value)`` and a two's complement fraction; the library negates the
    integer part and adds the signed fraction, giving ``-(M - f)`` for the true ``-(M - 1 + f)``.
    """
    if total_us >= 0 or total_us % _US_PER_S == 0:
        return total_us
    magnitude = -total_us
    whole_s = -(-magnitude // _US_PER_S)
    frac_us = whole_s * _US_PER_S - magnitude
    return -((whole_s - 1) * _US_PER_S + frac_us)


def set_converter(column: Any) -> Converter:
    """SET as its labels joined by commas in declared order, as MySQL shows it."""
    order = {label: index for index, label in enumerate(column.set_values or [])}
    return lambda labels: ",".join(sorted(labels, key=order.__getitem__))


_BY_TYPE: dict[int, Callable[[Any], Converter | None]] = {
    FIELD_TYPE.NEWDECIMAL: lambda column: decimal_text,
    FIELD_TYPE.FLOAT: lambda column: float32,
    FIELD_TYPE.YEAR: lambda column: year_value,
    FIELD_TYPE.BIT: lambda column: bit_value,
    FIELD_TYPE.DATE: lambda column: date_text,
    FIELD_TYPE.DATETIME: datetime_converter,
    FIELD_TYPE.DATETIME2: datetime_converter,
    FIELD_TYPE.TIMESTAMP: timestamp_converter,
    FIELD_TYPE.TIMESTAMP2: timestamp_converter,
    FIELD_TYPE.TIME: time_converter,
    FIELD_TYPE.TIME2: time_converter,
    FIELD_TYPE.SET: set_converter,
    FIELD_TYPE.JSON: lambda column: normalize_binary_json,
    FIELD_TYPE.GEOMETRY: lambda column: bytes,
}
