"""Generates one Python function per table layout that decodes every row image of an event.

The function is straight-line code: for a row without NULLs, runs of fixed-width columns are
one ``struct.unpack_from`` and the others a few slicing statements each; a row with NULLs
takes a second copy that checks each column's NULL bit. Rows become dicts keyed by column
name, as ``TableShape.convert`` makes them.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from typing import Any

from workers.source.decode.plans import Plan, Unsupported, plan_for

DecodeImages = Callable[[bytes, int, int], list[dict[str, Any]]]
_ROW = " " * 8
_CELL = " " * 12


def compile_images(
    label: str, columns: Sequence[Any], charsets: Sequence[str | None], json_names: frozenset[str]
) -> tuple[DecodeImages, str]:
    """The decoding function for this layout and its source (for debugging)."""
    names = [column.name for column in columns]
    if any(not isinstance(name, str) for name in names) or len(set(names)) != len(names):
        raise Unsupported("column_names")
    plans = [
        plan_for(i, column, charset, column.name in json_names)
        for i, (column, charset) in enumerate(zip(columns, charsets, strict=True))
    ]
    namespace: dict[str, Any] = {"_from_bytes": int.from_bytes}  # cheaper than int.from_bytes
    for plan in plans:
        namespace.update(plan.constants)
    source = _function_source(names, plans, namespace)
    code = compile(source, f"<row decoder {label}>", "exec")
    exec(code, namespace)  # the source holds only our code, column names as repr literals
    function: DecodeImages = namespace["decode_images"]
    return function, source


def _function_source(names: list[str], plans: list[Plan], namespace: dict[str, Any]) -> str:
    count = len(names)
    null_bytes = (count + 7) // 8
    lines = [
        "def decode_images(d, p, end):",
        "    out = []",
        "    append = out.append",
        "    while p < end:",
        f"{_ROW}nb = {_null_bitmap(null_bytes, count)}",
        f"{_ROW}p += {null_bytes}",
        f"{_ROW}if nb:",
        *_with_nulls(plans, namespace),
        f"{_ROW}else:",
        *_without_nulls(plans, namespace),
        _ROW + "append({" + ", ".join(f"{name!r}: c{i}" for i, name in enumerate(names)) + "})",
        "    if p != end:",
        '        raise ValueError(f"row images end at {p}, the event at {end}")',
        "    return out",
    ]
    return "\n".join(lines) + "\n"


def _null_bitmap(null_bytes: int, count: int) -> str:
    # Unused bits of the last byte are set by the server: mask them off.
    mask = "" if count == null_bytes * 8 else f" & {(1 << count) - 1}"
    if null_bytes == 1:
        return f"d[p]{mask}"
    if null_bytes == 2:
        return f"(d[p] | d[p + 1] << 8){mask}"
    return f'_from_bytes(d[p:p + {null_bytes}], "little"){mask}'


def _with_nulls(plans: list[Plan], namespace: dict[str, Any]) -> list[str]:
    lines = []
    for i, plan in enumerate(plans):
        lines += [f"{_CELL}if nb & {1 << i}:", f"{_CELL}    c{i} = None", f"{_CELL}else:"]
        lines += [f"{_CELL}    {line}" for line in _alone(i, plan, namespace)]
    return lines


def _without_nulls(plans: list[Plan], namespace: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    run: list[tuple[int, Plan]] = []
    for i, plan in enumerate(plans):
        if plan.struct:
            run.append((i, plan))
            continue
        lines += _packed(run, namespace)
        run = []
        lines += [f"{_CELL}{line}" for line in _alone(i, plan, namespace)]
    lines += _packed(run, namespace)
    return lines


def _alone(i: int, plan: Plan, namespace: dict[str, Any]) -> list[str]:
    """One column read on its own (assigning ``c{i}``)."""
    if not plan.struct:
        return [line.replace("{v}", f"c{i}") for line in plan.lines]
    if plan.struct == "B":
        temps = [f"t{i}_0"]
        lines = [f"{temps[0]} = d[p]", "p += 1"]
    else:
        temps = [f"t{i}_{k}" for k in range(len(plan.struct))]
        unpack = _unpacker(plan.struct, namespace)
        size = struct.calcsize("<" + plan.struct)
        lines = [f"{', '.join(temps)}, = {unpack}(d, p)", f"p += {size}"]
    return [*lines, f"c{i} = {_finish(plan, temps)}"]


def _packed(run: list[tuple[int, Plan]], namespace: dict[str, Any]) -> list[str]:
    """A run of fixed-width little-endian columns read with one unpack."""
    if not run:
        return []
    codes = "".join(plan.struct for _, plan in run)
    temps: list[str] = []
    finishes = []
    for i, plan in run:
        mine = [f"t{i}_{k}" for k in range(len(plan.struct))]
        temps += mine
        if plan.finish is not None:
            finishes.append(f"{_CELL}c{i} = {_finish(plan, mine)}")
        else:
            temps[-1] = f"c{i}"
    if codes == "B":  # one unsigned byte: indexing is cheaper than an unpack
        return [f"{_CELL}{temps[0]} = d[p]", f"{_CELL}p += 1", *finishes]
    unpack = _unpacker(codes, namespace)
    size = struct.calcsize("<" + codes)
    return [f"{_CELL}{', '.join(temps)}, = {unpack}(d, p)", f"{_CELL}p += {size}", *finishes]


def _finish(plan: Plan, temps: list[str]) -> str:
    return temps[0] if plan.finish is None else plan.finish.format(*temps)


def _unpacker(codes: str, namespace: dict[str, Any]) -> str:
    name = f"_unpack_{codes}"
    namespace.setdefault(name, struct.Struct("<" + codes).unpack_from)
    return name
