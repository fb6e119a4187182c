"""Which tables a pipeline captures: ``db.t``, ``db.*``, ``db.prefix%`` (``%`` is a wildcard)."""

from __future__ import annotations

import re

SYSTEM_SCHEMAS = frozenset({"mysql", "information_schema", "performance_schema", "sys"})


class TableFilter:
    """Matches ``(schema, table)`` against patterns; decisions are cached per table."""

    def __init__(self, patterns: list[str]) -> None:
        self._regex = _compile(patterns) if patterns else None
        self._decisions: dict[tuple[str, str], bool] = {}
        self.schemas = _literal_schemas(patterns)

    def matches(self, schema: str, table: str) -> bool:
        key = (schema, table)
        decision = self._decisions.get(key)
        if decision is None:
            decision = self._decide(schema, table)
            self._decisions[key] = decision
        return decision

    def _decide(self, schema: str, table: str) -> bool:
        if self._regex is None:
            return schema not in SYSTEM_SCHEMAS
        return self._regex.fullmatch(f"{schema}.{table}") is not None


def _compile(patterns: list[str]) -> re.Pattern[str]:
    return re.compile("|".join(f"(?:{_pattern_regex(p)})" for p in patterns))


def _pattern_regex(pattern: str) -> str:
    schema, _, table = pattern.partition(".")
    return rf"{_part_regex(schema)}\.{_part_regex(table)}"


def _part_regex(part: str) -> str:
    if part == "*":
        return r"[^.]*"
    return ".*".join(re.escape(piece) for piece in part.split("%"))


def _literal_schemas(patterns: list[str]) -> list[str] | None:
    """The schemas to let the library pre-filter on, or None when any schema can match."""
    schemas = [p.partition(".")[0] for p in patterns]
    if not schemas or any("%" in s or s == "*" for s in schemas):
        return None
    return sorted(set(schemas))
