"""Request templates, shared by the config check and the load drivers.

{seq} (a per-request counter), {rand:A-B} (0 <= A <= B) and {uuid}; {{ is a literal {, and so
is a { not followed by a letter, so JSON bodies need no escaping. The bundled Go generator
implements the same rules.
"""

from __future__ import annotations

MAX_LUA_INT = 2**53 - 1  # wrk's LuaJIT numbers are doubles: larger integers are not exact

# A template part: a literal string, ("seq",), ("uuid",) or ("rand", lo, hi).
Part = str | tuple[str] | tuple[str, int, int]


def parse_template(text: str) -> list[Part]:
    """Split `text` into literal and template parts, with the bundled generator's rules.

    {seq}, {rand:A-B} (0 <= A <= B) and {uuid} are templates; {{ is a literal {, and so is a {
    not followed by a letter (so JSON bodies need no escaping); any other {word...} is an error
    (ValueError).
    """
    parts: list[Part] = []
    literal: list[str] = []
    i = 0
    while i < len(text):
        c = text[i]
        if c != "{":
            literal.append(c)
            i += 1
            continue
        nxt = text[i + 1 : i + 2]
        if nxt == "{":
            literal.append("{")
            i += 2
            continue
        if not (nxt.isascii() and nxt.isalpha()):
            literal.append("{")
            i += 1
            continue
        end = text.find("}", i)
        if end < 0:
            raise ValueError(f"unterminated template {text[i:]!r} (write {{{{ for a literal {{)")
        part = _directive(text[i + 1 : end], text[i : end + 1])
        if literal:
            parts.append("".join(literal))
            literal = []
        parts.append(part)
        i = end + 1
    if literal:
        parts.append("".join(literal))
    return parts


def _directive(word: str, shown: str) -> Part:
    if word == "seq":
        return ("seq",)
    if word == "uuid":
        return ("uuid",)
    if word.startswith("rand:"):
        lo_text, sep, hi_text = word[len("rand:") :].partition("-")
        if not sep or not (lo_text.isascii() and lo_text.isdigit()):
            raise ValueError(f"invalid template {shown!r}: want {{rand:A-B}} with 0 <= A <= B")
        if not (hi_text.isascii() and hi_text.isdigit()):
            raise ValueError(f"invalid template {shown!r}: want {{rand:A-B}} with 0 <= A <= B")
        lo, hi = int(lo_text), int(hi_text)
        if lo > hi:
            raise ValueError(f"invalid template {shown!r}: lower bound greater than upper bound")
        if hi > MAX_LUA_INT:
            raise ValueError(f"invalid template {shown!r}: wrk handles bounds up to 2^53-1")
        return ("rand", lo, hi)
    raise ValueError(
        f"invalid template {shown!r}: unknown template "
        "(known: {seq}, {rand:A-B}, {uuid}; write {{ for a literal {)"
    )
