"""Positioned YAML: compose a document into nodes (nothing constructed beyond safe scalars) and
read them with errors that name file:line:col, the key path and a caret under the value.

Generic on purpose: the schema lives in config.py, which subclasses NodeReader.
"""

from __future__ import annotations

import difflib
import math
import re
import sys
from collections.abc import Callable
from typing import Any

import yaml

from leakgate.errors import ConfigError
from leakgate.units import number_text, parse_duration

MAX_NODES = 10_000


def compose(text: str, filename: str) -> yaml.Node | None:
    """The document's root node (None when empty), or a ConfigError with a caret."""
    try:
        loader = yaml.SafeLoader(text)  # its reader refuses characters YAML forbids (NUL, ...)
    except yaml.YAMLError as e:
        raise ConfigError(f"{filename}: invalid YAML: {e}") from None
    try:
        return loader.get_single_node()
    except yaml.MarkedYAMLError as e:
        raise ConfigError(_yaml_error(filename, text, e)) from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{filename}: invalid YAML: {e}") from None
    finally:
        loader.dispose()


def _yaml_error(filename: str, text: str, e: yaml.MarkedYAMLError) -> str:
    mark = e.problem_mark or e.context_mark
    if e.context_mark is not None and (mark is None or mark.line >= len(text.splitlines())):
        mark = e.context_mark  # an error at end of file is better shown where the construct began
    problem = "; ".join(p for p in (e.context, e.problem) if p) or "invalid YAML"
    if mark is None:
        return f"{filename}: invalid YAML: {problem}"
    return f"{filename}:{mark.line + 1}:{mark.column + 1}: invalid YAML: {problem}\n" + caret(
        text, mark.line, mark.column
    )


def caret(text: str, line: int, column: int) -> str:
    lines = text.splitlines()
    if not 0 <= line < len(lines):
        return ""
    return f"    {lines[line]}\n    {' ' * column}^"


PLAIN_TAGS = {
    f"tag:yaml.org,2002:{name}" for name in ("str", "int", "float", "bool", "null", "seq", "map")
}
_INT_TAG = "tag:yaml.org,2002:int"
_DECIMAL = re.compile(r"[-+]?[0-9][0-9_]*")


class LongInteger(ConfigError):
    """A decimal integer longer than Python reads (sys.get_int_max_str_digits(), 4,300 by
    default): int() raises ValueError on it. Where a string goes it is still that text."""


class NodeReader:
    """Reads values out of composed nodes; every error names where the value was written."""

    def __init__(self, filename: str, text: str) -> None:
        self.filename = filename
        self.text = text
        self.nodes = 0

    def error(self, node: yaml.Node, keypath: str, message: str) -> ConfigError:
        mark = node.start_mark
        where = f"{self.filename}:{mark.line + 1}:{mark.column + 1}"
        return ConfigError(
            f"{where}: {keypath}: {message}\n{caret(self.text, mark.line, mark.column)}".rstrip()
        )

    def count(self, node: yaml.Node, keypath: str) -> None:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise self.error(node, keypath, f"config has more than {MAX_NODES} values")
        if node.tag not in PLAIN_TAGS:
            tag = node.tag.replace("tag:yaml.org,2002:", "!!")
            raise self.error(node, keypath, f"rejected: the YAML tag {tag} is not allowed here")

    def scalar(self, node: yaml.Node, keypath: str) -> Any:
        self.count(node, keypath)
        if not isinstance(node, yaml.ScalarNode):
            raise self.error(node, keypath, f"expected a single value, got {kind(node)}")
        loader = yaml.SafeLoader("")
        try:
            return loader.construct_object(node, deep=True)
        except yaml.YAMLError as e:
            problem = getattr(e, "problem", None) or str(e)
            raise self.error(node, keypath, f"rejected: {problem}") from None
        except (ValueError, TypeError, KeyError, IndexError, OverflowError):
            # The safe constructor's int(), float() and table lookups on the text: a decimal
            # integer over Python's digit limit, or an explicit tag on text it cannot read
            # (`!!int many`, `!!bool maybe`, `!!int ''`).
            raise self._unreadable(node, keypath) from None
        finally:
            loader.dispose()

    def _unreadable(self, node: yaml.Node, keypath: str) -> ConfigError:
        text = str(node.value)
        digits = len(text.lstrip("+-").replace("_", ""))
        limit = sys.get_int_max_str_digits()
        if node.tag == _INT_TAG and _DECIMAL.fullmatch(text) and 0 < limit < digits:
            too_long = f"an integer of {digits} digits is too long to read"
            too_long += f" (the limit is {limit} digits)"
            return LongInteger(self.error(node, keypath, too_long).message)
        tag = node.tag.replace("tag:yaml.org,2002:", "!!")
        return self.error(node, keypath, f"rejected: {printable(text, quote=True)} is not a {tag}")

    def mapping(
        self, node: yaml.Node, keypath: str, allowed: tuple[str, ...] | None
    ) -> dict[str, tuple[yaml.Node, yaml.Node]]:
        self.count(node, keypath)
        if isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null":
            return {}
        if not isinstance(node, yaml.MappingNode):
            raise self.error(
                node, keypath or "(top level)", f"expected a mapping, got {kind(node)}"
            )
        out: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        for key_node, value_node in node.value:
            key = self.scalar(key_node, keypath or "(top level)")
            sub = f"{keypath}.{key}" if keypath else str(key)
            if not isinstance(key, str):
                raise self.error(key_node, sub, "keys must be strings")
            if key in out:
                first = out[key][0].start_mark.line + 1
                raise self.error(key_node, sub, f"duplicate key (first defined on line {first})")
            if allowed is not None and key not in allowed:
                hint = difflib.get_close_matches(key, allowed, n=1)
                suggestion = f"; did you mean {hint[0]!r}?" if hint else ""
                known = ", ".join(allowed)
                raise self.error(key_node, sub, f"unknown key{suggestion} (known: {known})")
            out[key] = (key_node, value_node)
        return out

    def sequence(self, node: yaml.Node, keypath: str) -> list[yaml.Node]:
        self.count(node, keypath)
        if not isinstance(node, yaml.SequenceNode):
            raise self.error(node, keypath, f"expected a list, got {kind(node)}")
        return list(node.value)

    def string(self, node: yaml.Node, keypath: str, *, nul: bool = False) -> str:
        """The text as written. NUL (a double-quoted "\\0") is refused unless `nul`: no argv,
        environment entry or path can carry one, and the exec would fail after the start."""
        try:
            value = self.scalar(node, keypath)
        except LongInteger:
            value = node.value  # digits, taken as written below, like any number here
        if isinstance(value, bool) or value is None or isinstance(value, (list, dict)):
            raise self.error(node, keypath, f"expected a string, got {describe(value)}")
        # The text as written: `GOGC: 0100` stays "0100", not YAML 1.1's octal 64.
        text = str(node.value)
        if not nul and "\0" in text:
            raise self.error(node, keypath, "contains a NUL byte")
        return text

    def strings(self, node: yaml.Node, keypath: str) -> tuple[str, ...]:
        return tuple(
            self.string(item, f"{keypath}[{i}]")
            for i, item in enumerate(self.sequence(node, keypath))
        )

    def boolean(self, node: yaml.Node, keypath: str) -> bool:
        value = self.scalar(node, keypath)
        if not isinstance(value, bool):
            raise self.error(node, keypath, f"expected true or false, got {describe(value)}")
        return value

    def integer(self, node: yaml.Node, keypath: str, low: int, high: int) -> int:
        value = self.scalar(node, keypath)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(node, keypath, f"expected a whole number, got {describe(value)}")
        if not low <= value <= high:
            raise self.error(
                node, keypath, f"must be between {low} and {high}, got {number_text(value)}"
            )
        return value

    def number(self, node: yaml.Node, keypath: str, low: float, high: float) -> float:
        value = self.scalar(node, keypath)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.error(node, keypath, f"expected a number, got {describe(value)}")
        # By range first: math.isfinite (and float) of an integer over ~1.8e308 raises
        # OverflowError. NaN fails every comparison; the bounds are finite.
        if not (low <= value <= high and math.isfinite(value)):
            raise self.error(
                node, keypath, f"must be between {low:g} and {high:g}, got {number_text(value)}"
            )
        return float(value)

    def unit(
        self, node: yaml.Node, keypath: str, parse: Callable[[Any], float], high: float
    ) -> float:
        value = self.scalar(node, keypath)
        if value is None or isinstance(value, bool):
            raise self.error(node, keypath, f"expected a value with a unit, got {describe(value)}")
        try:
            parsed = parse(value)
        except (ValueError, TypeError, AttributeError, OverflowError) as e:
            raise self.error(node, keypath, str(e)) from None
        if parsed > high:
            shown = value if isinstance(value, str) else number_text(value)
            raise self.error(node, keypath, f"{shown} is over the limit of {high:g}")
        return parsed

    def duration(self, node: yaml.Node, keypath: str, high: float = 24 * 3600.0) -> float:
        return self.unit(node, keypath, parse_duration, high)


def printable(text: str, *, quote: bool = False) -> str:
    """`text` with control and other unprintable characters escaped (\\r, \\x00), for
    messages that must not carry them to a terminal; `quote` wraps it in single quotes."""
    shown = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return f"'{shown}'" if quote else shown


def kind(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    return "a single value"


def describe(value: object) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, (int, float)):
        return f"a number ({number_text(value)})"
    return f"{type(value).__name__} {value!r}"
