"""How each column of a table map is read: Python source lines, or a struct code.

A ``Plan`` says how to read one non-NULL value at ``d[p:]`` (``d`` the event bytes, ``p`` the
position, advanced past the value) into a variable. Little-endian fixed-width values also
give a struct code, so runs of them are read with one ``unpack_from``. ``plan_for`` raises
``Unsupported`` for what the fast decoder does not read; that table map then uses the
library's decoder.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass, field
from typing import Any

from pymysqlreplication.constants import FIELD_TYPE

from workers.source.decode import fields, temporal
from workers.source.values import MYSQL_LATIN1, converter_for, float32

_INT_CODES = {
    FIELD_TYPE.TINY: "b",
    FIELD_TYPE.SHORT: "h",
    FIELD_TYPE.LONG: "i",
    FIELD_TYPE.LONGLONG: "q",
}
_UINT_CODES = {1: "B", 2: "H", 4: "I", 8: "Q"}
_TEXT_CODECS = {"utf-8", "ascii", "latin-1"}  # decoded inline; others go through values.py


class Unsupported(Exception):
    """A column or event the fast decoder does not read; ``reason`` names it for the metric."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class Plan:
    """Reading one value: ``struct`` code(s) and an optional ``finish`` expression over the
    unpacked temporaries ``{0}``, ``{1}``; or ``lines`` assigning ``{v}`` and advancing p."""

    struct: str = ""
    finish: str | None = None
    lines: list[str] = field(default_factory=list)
    constants: dict[str, Any] = field(default_factory=dict)


def plan_for(index: int, column: Any, charset: str | None, is_json: bool) -> Plan:
    """The plan of column ``index``; constants it needs are named with the index."""
    kind = column.type
    planner = _PLANNERS.get(kind)
    if planner is None:
        raise Unsupported(f"type:{_type_name(kind)}")
    plan: Plan = planner(index, column, charset, is_json)
    return plan


def _integer(index: int, column: Any, charset: str | None, is_json: bool) -> Plan:
    if column.type == FIELD_TYPE.INT24:
        return Plan("HB" if column.unsigned else "Hb", "{0} | {1} << 16")
    code = _INT_CODES[column.type]
    return Plan(code.upper() if column.unsigned else code)


def _float(index: int, column: Any, charset: str | None, is_json: bool) -> Plan:
    return Plan("f", "_float32({0})", constants={"_float32": float32})


def _double(index: int, column: Any, charset: str | None, is_json: bool) -> Plan:
    return Plan("d")


def _year(index: int, column: Any, charset: str | None, is_json: bool) -> Plan:
    return Plan("B", "{0} + 1900 if {0} else 0")


def _enum(index: int, column: Any, charset: str | None, is_json: bool) -> Plan:
    code = _UINT_CODES.get(column.size)
    if code is None:
        raise Unsupported("enum_size")
    if not column.enum_values:
        return Plan(code, "None")
    name = f"_enum{index}"
    return Plan(code, f"{name}[{{0}}]", constants={name: tuple(column.enum_values)})


def _set(index: int, column: Any, charset: str | None, is_json: bool) -> Plan:
    name = f"_set{index}"
    constants = {name: fields.set_decoder(column.set_values or ())}
    if column.size == 3:
        return Plan("HB", f"{name}({{0}} | {{1}} << 16)", constants=constants)
    code = _UINT_CODES.get(column.size)
    if code is None:
        raise Unsupported("set_size")
    return Plan(code, f"{name}({{0}})", constants=constants)


def _timestamp(index: int, column: Any, charset: str | None, is_json: bool) -> Plan:
    return Plan("I", "_timestamp_text({0})", constants={"_timestamp_text": temporal.timestamp_text})


def _decimal(index: int, column: Any, charset: str | None, is_json: bool) -> Plan:
    precision, scale = column.precision, column.decimals
    size = fields.decimal_size(precision, scale)
    if precision - scale <= 9 and scale <= 9:
        lines, constants = _small_decimal_lines(index, size, scale)
        return Plan(lines=[f'x = _from_bytes(d[p:p + {size}], "big")', f"p += {size}",
                           *lines], constants=constants)
    name = f"_decimal{index}"
    decoder = fields.decimal_decoder(precision, scale)
    return Plan(
        lines=[f"{{v}} = {name}(d[p:p + {size}])", f"p += {size}"], constants={name: decoder}
    )


def _small_decimal_lines(index: int, size: int, scale: int) -> tuple[list[str], dict[str, Any]]:
    """Inline ``fields.decimal_decoder`` where each part fits one group (value = its bits);
    a one-byte fraction's text (``.05``) is a table lookup."""
    top = 1 << (8 * size - 1)
    negative_flip = ((1 << (8 * size)) - 1) ^ top
    if not scale:
        return [f"if x & {top}:", f"    {{v}} = str(x ^ {top})", "else:",
                f'    {{v}} = "-" + str(x ^ {negative_flip})'], {}
    shift = 8 * fields.decimal_size(scale, scale)
    mask = (1 << shift) - 1
    constants: dict[str, Any] = {}
    if shift == 8:
        table = f"_fraction{index}"
        constants[table] = fields.fraction_texts(scale)
        text = f"{{x >> 8}}{{{table}[x & 255]}}"
    else:
        text = f"{{x >> {shift}}}.{{str(x & {mask}).zfill({scale})}}"
    return [f"if x & {top}:", f"    x ^= {top}", f'    {{v}} = f"{text}"', "else:",
            f"    x ^= {negative_flip}", f'    {{v}} = f"-{text}"'], constants


def _date(index: int, column: Any, charset: str | None, is_json: bool) -> Plan:
    return Plan(
        lines=["{v} = _date_text(d[p] | d[p + 1] << 8 | d[p + 2] << 16)", "p += 3"],
        constants={"_date_text": temporal.date_text},
    )


def _big_endian(width: int, name: str, decoder: Any) -> Plan:
    return Plan(
        lines=[f'{{v}} = {name}(_from_bytes(d[p:p + {width}], "big"))', f"p += {width}"],
        constants={name: decoder},
    )


def _datetime2(index: int, column: Any, charset: str | None, is_json: bool) -> Plan:
    fsp = column.fsp
    width = 5 + temporal.fraction_bytes(fsp)
    return _big_endian(width, f"_datetime{index}", temporal.datetime2_decoder(fsp))


def _timestamp2(index: int, column: Any, charset: str | None, is_json: bool) -> Plan:
    fsp = column.fsp
    width = 4 + temporal.fraction_bytes(fsp)
    return _big_endian(width, f"_timestamp{index}", temporal.timestamp2_decoder(fsp))


def _time2(index: int, column: Any, charset: str | None, is_json: bool) -> Plan:
    fsp = column.fsp
    width = 3 + temporal.fraction_bytes(fsp)
    return _big_endian(width, f"_time{index}", temporal.time2_decoder(fsp))


def _bit(index: int, column: Any, charset: str | None, is_json: bool) -> Plan:
    width, mask = column.bytes, fields.bit_mask(column.bits)
    if width < 1:
        raise Unsupported("bit_width")
    return Plan(lines=[f'{{v}} = _from_bytes(d[p:p + {width}], "big") & {mask}',
                       f"p += {width}"])


def _length_lines(size: int) -> list[str]:
    """``n`` = the little-endian length prefix of ``size`` bytes."""
    if size == 1:
        read = "d[p]"
    elif size == 2:
        read = "d[p] | d[p + 1] << 8"
    elif size == 3:
        read = "d[p] | d[p + 1] << 8 | d[p + 2] << 16"
    elif size == 4:
        read = '_from_bytes(d[p:p + 4], "little")'
    else:
        raise Unsupported("length_size")
    return [f"n = {read}", f"p += {size}"]


def _string(index: int, column: Any, charset: str | None, is_json: bool) -> Plan:
    if column.type == FIELD_TYPE.BLOB:
        prefix = column.length_size
    else:
        prefix = 2 if column.max_length > 255 else 1
    value, constants = _text_value(index, column, charset, is_json)
    return Plan(lines=[*_length_lines(prefix), f"{{v}} = {value}", "p += n"], constants=constants)


def _text_value(index: int, column: Any, charset: str | None,
                is_json: bool) -> tuple[str, dict[str, Any]]:
    """The expression for the string's bytes ``d[p:p + n]``: what values.py's converter gives
    for the library's value (raw bytes, or ``""`` when empty)."""
    raw = "d[p:p + n]"
    if charset == "binary" and not is_json:
        if column.type == FIELD_TYPE.STRING:
            return f"{raw}.ljust({column.max_length}, b'\\x00')", {}
        return raw, {}
    encoding = _codec_name(charset)
    if charset == "cp1252" and not is_json:  # MySQL latin1, as values.decode_mysql_latin1
        constants = {"_charmap_decode": codecs.charmap_decode, "_latin1": MYSQL_LATIN1}
        return f'_charmap_decode({raw}, "strict", _latin1)[0] if n else ""', constants
    if encoding in _TEXT_CODECS and not is_json:
        return f'{raw}.decode("{encoding}", "replace") if n else ""', {}
    name = f"_convert{index}"
    convert = converter_for(column, charset, is_json)
    return f'{name}({raw} if n else "")', {name: convert}


def _codec_name(charset: str | None) -> str | None:
    try:
        return codecs.lookup(charset or "utf8").name
    except LookupError:
        return None


def _geometry(index: int, column: Any, charset: str | None, is_json: bool) -> Plan:
    return Plan(lines=[*_length_lines(column.length_size), "{v} = d[p:p + n]", "p += n"])


def _binary_json(index: int, column: Any, charset: str | None, is_json: bool) -> Plan:
    return Plan(
        lines=[*_length_lines(column.length_size),
               "{v} = _binary_json(d[p:p + n]) if n else None", "p += n"],
        constants={"_binary_json": fields.binary_json},
    )


def _type_name(kind: int) -> str:
    for name, value in vars(FIELD_TYPE).items():
        if name.isupper() and value == kind:
            return str(name)
    return str(kind)


_PLANNERS = {
    FIELD_TYPE.TINY: _integer,
    FIELD_TYPE.SHORT: _integer,
    FIELD_TYPE.INT24: _integer,
    FIELD_TYPE.LONG: _integer,
    FIELD_TYPE.LONGLONG: _integer,
    FIELD_TYPE.FLOAT: _float,
    FIELD_TYPE.DOUBLE: _double,
    FIELD_TYPE.YEAR: _year,
    FIELD_TYPE.ENUM: _enum,
    FIELD_TYPE.SET: _set,
    FIELD_TYPE.TIMESTAMP: _timestamp,
    FIELD_TYPE.NEWDECIMAL: _decimal,
    FIELD_TYPE.DATE: _date,
    FIELD_TYPE.DATETIME2: _datetime2,
    FIELD_TYPE.TIMESTAMP2: _timestamp2,
    FIELD_TYPE.TIME2: _time2,
    FIELD_TYPE.BIT: _bit,
    FIELD_TYPE.VARCHAR: _string,
    FIELD_TYPE.STRING: _string,
    FIELD_TYPE.BLOB: _string,
    FIELD_TYPE.GEOMETRY: _geometry,
    FIELD_TYPE.JSON: _binary_json,
}
