"""Typed access to a parsed TOML file, with ``FILE:LINE: KEY: message`` errors."""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

from sgdtemp.errors import UserError

__all__ = ["TomlReader", "key_lines", "located_error"]


_BARE_OR_QUOTED = r"""(?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*')"""
_KEY_RE = re.compile(rf"\s*({_BARE_OR_QUOTED}(?:\s*\.\s*{_BARE_OR_QUOTED})*)\s*=")
_TABLE_RE = re.compile(r"""\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(?:#.*)?$""")


def _split_dotted(text: str) -> list[str]:
    parts = re.findall(r"""[A-Za-z0-9_-]+|"[^"]*"|'[^']*'""", text)
    return [p[1:-1] if p[:1] in "\"'" else p for p in parts]


def key_lines(text: str) -> dict[str, int]:
    """Line number (1-based) of every key and table header, by dotted path.

    A light scan, good for error messages: keys inside inline tables get their parent's line.
    """
    lines: dict[str, int] = {}
    table: list[str] = []
    depth = 0  # open brackets of a multi-line array
    for number, line in enumerate(text.splitlines(), start=1):
        if depth == 0:
            header = _TABLE_RE.match(line)
            if header and not _KEY_RE.match(line):
                table = _split_dotted(header.group(1))
                lines.setdefault(".".join(table), number)
                continue
            key = _KEY_RE.match(line)
            if key:
                path = ".".join([*table, *_split_dotted(key.group(1))])
                lines.setdefault(path, number)
                line = line[key.end() :]
        stripped = re.sub(r"""("[^"]*"|'[^']*')""", "", line).split("#", 1)[0]
        depth = max(0, depth + stripped.count("[") - stripped.count("]"))
    return lines


def located_error(
    source: str | None, lines: Mapping[str, int], key: str, message: str
) -> UserError:
    """``SOURCE:LINE: KEY: message``, the line of ``key`` or of its nearest table."""
    line = lines.get(key)
    parent = key
    while line is None and "." in parent:
        parent = parent.rsplit(".", 1)[0]
        line = lines.get(parent)
    source = source or "<spec>"
    where = source if line is None else f"{source}:{line}"
    return UserError(f"{where}: {key}: {message}")


class TomlReader:
    """Typed access to the parsed TOML with file:line:key errors."""

    def __init__(self, source: str, text: str):
        self.source = source
        self.lines = key_lines(text)

    def error(self, key: str, message: str) -> UserError:
        """A :class:`UserError` naming the file, the key's line (or its table's) and the key."""
        return located_error(self.source, self.lines, key, message)

    def unknown(self, table: Mapping[str, Any], allowed: Iterable[str], prefix: str) -> None:
        allowed = list(allowed)
        for name in table:
            if name not in allowed:
                close = difflib.get_close_matches(name, allowed, n=1)
                hint = f"did you mean {close[0]!r}?" if close else f"known: {', '.join(allowed)}"
                raise self.error(f"{prefix}{name}", f"unknown key; {hint}")

    def value(
        self,
        table: Mapping[str, Any],
        name: str,
        kind: str,
        prefix: str = "",
        *,
        default: Any = None,
        required: bool = False,
    ) -> Any:
        key = f"{prefix}{name}"
        if name not in table:
            if required:
                raise self.error(key, "missing; this key is required")
            return default
        return self.check(table[name], kind, key)

    def check(self, value: Any, kind: str, key: str) -> Any:
        checks = {
            "str": lambda v: isinstance(v, str) and v.strip() != "",
            "bool": lambda v: isinstance(v, bool),
            "int>=0": lambda v: _is_int(v) and v >= 0,
            "int>0": lambda v: _is_int(v) and v > 0,
            "num>0": lambda v: _is_num(v) and v > 0,
            "num>=0": lambda v: _is_num(v) and v >= 0,
            "momentum": lambda v: _is_num(v) and 0 <= v < 1,
            "count|fraction": lambda v: (_is_int(v) and v >= 0) or (_is_num(v) and 0 < v < 1),
            "table": lambda v: isinstance(v, dict),
        }
        words = {
            "str": "a non-empty string",
            "bool": "true or false",
            "int>=0": "a non-negative integer",
            "int>0": "a positive integer",
            "num>0": "a positive number",
            "num>=0": "a non-negative number",
            "momentum": "a number in [0, 1)",
            "count|fraction": "a count (integer) or a fraction in (0, 1)",
            "table": "a table",
        }
        if kind.startswith("list:"):
            item = kind[5:]
            if not isinstance(value, list) or not value:
                raise self.error(key, f"must be a non-empty list of {words[item]}s, got {value!r}")
            for i, v in enumerate(value):
                if not checks[item](v):
                    raise self.error(key, f"item {i} must be {words[item]}, got {v!r}")
            if len(set(map(repr, value))) != len(value):
                raise self.error(key, f"has repeated values: {value!r}")
            return list(value)
        if kind.startswith("choice:"):
            choices = kind[7:].split(",")
            if value not in choices:
                raise self.error(key, f"must be one of {', '.join(choices)}, got {value!r}")
            return value
        if not checks[kind](value):
            raise self.error(key, f"must be {words[kind]}, got {value!r}")
        return value


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
