"""How node names are written in expressions: dotted names, Python keywords, backquotes.

The rule: a node name is written as it is, dots included (``plant1.boiler.temp``).
A dotted name may have segments that are Python keywords (``dev1.in``,
``line.if``): the whole dotted name is one node. A name that is itself a
keyword (``in``, ``if``, ``not``), or any name at all, can be written between
backquotes (`` `in` ``, `` `dev1.in` ``).

Python's parser cannot read either form, so before ``ast.parse`` such names are
replaced by placeholder identifiers that appear nowhere else in the text; the
compiler maps them back. Nothing else changes: the text the parser sees is the
user's, with names swapped, so the whitelist still decides what compiles.
"""

from __future__ import annotations

import io
import keyword
import re
import tokenize
from dataclasses import dataclass, field

from streamcalc.graph.model import valid_node_name

_BACKQUOTED = re.compile(r"`([^`]*)`")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: Keywords that are operators of the language; bare, they never name a node.
OPERATOR_KEYWORDS = frozenset({"and", "or", "not"})
_SKIPPED = (tokenize.NEWLINE, tokenize.NL, tokenize.COMMENT, tokenize.ENDMARKER)


class QuotingError(ValueError):
    """A backquoted name that is not a node name, or an unclosed backquote."""


@dataclass(slots=True)
class Rewritten:
    """The text the parser sees, and how to map its placeholders and columns back."""

    text: str
    names: dict[str, str] = field(default_factory=dict)
    """placeholder -> node name"""
    spans: list[tuple[int, int, int, int]] = field(default_factory=list)
    """(start in text, length in text, start in the original, length in the original)"""

    def column(self, column: int) -> int:
        """The 0-based column in the original text of ``column`` in the rewritten text."""
        delta = 0
        for start, length, old_start, old_length in self.spans:
            if column < start:
                break
            if column < start + length:
                return old_start
            delta += old_length - length
        return column + delta


def rewrite(text: str) -> Rewritten:
    """Replace backquoted names and dotted names with keyword segments by placeholders.

    ``text`` is ASCII. Raises QuotingError for a bad backquoted name.
    """
    if "`" not in text and not _has_keyword(text):
        return Rewritten(text)
    quoted: dict[int, tuple[int, str]] = {}
    for match in _BACKQUOTED.finditer(text):
        name = match.group(1).strip()
        if not valid_node_name(name):
            where = f"at column {match.start() + 1}"
            raise QuotingError(f"bad node name {name!r} in backquotes {where}")
        quoted[match.start()] = (match.end(), name)
    rest = _BACKQUOTED.sub(lambda m: " " * len(m.group(0)), text)
    if "`" in rest:
        raise QuotingError(f"unclosed backquote at column {rest.index('`') + 1}")
    return _apply(text, _name_spans(rest, quoted), _free_prefix(text))


def bare_keyword(text: str) -> str | None:
    """The first keyword in ``text`` that stands alone where a name could: not an operator
    (``and``, ``or``, ``not``), not a segment of a dotted name (a hint for syntax errors)."""
    tokens = [t for t in _tokens(text) or () if t.type not in _SKIPPED]
    for i, token in enumerate(tokens):
        word = token.string
        if token.type != tokenize.NAME or word in OPERATOR_KEYWORDS or not keyword.iskeyword(word):
            continue
        dotted = any(0 <= j < len(tokens) and tokens[j].string == "." for j in (i - 1, i + 1))
        if not dotted:
            return word
    return None


def _has_keyword(text: str) -> bool:
    return any(keyword.iskeyword(word) for word in _IDENTIFIER.findall(text))


def _free_prefix(text: str) -> str:
    """An identifier prefix no identifier of ``text`` starts with: placeholders cannot collide."""
    words = _IDENTIFIER.findall(text)
    prefix = "_q"
    while any(word.startswith(prefix) for word in words):
        prefix = "_" + prefix
    return prefix


def _tokens(text: str) -> list[tokenize.TokenInfo] | None:
    try:
        return list(tokenize.generate_tokens(io.StringIO(text).readline))
    except (tokenize.TokenError, SyntaxError):
        return None  # the parser will report it


def _name_spans(text: str, quoted: dict[int, tuple[int, str]]) -> list[tuple[int, int, str]]:
    """(start, end, node name) of each name to replace: backquoted ones, and dotted chains that
    hold a keyword segment (``dev1.in``) or a backquoted one. ``text`` has the backquoted
    names blanked out; ``quoted`` maps their start to (end, name)."""
    tokens = _tokens(text)
    if tokens is None:
        return [(start, end, name) for start, (end, name) in quoted.items()]
    offsets = _line_offsets(text)
    # (start, end, word): word is a name, "`name" for a backquoted one, None for a dot,
    # "" for any other token (it ends a chain).
    items: list[tuple[int, int, str | None]] = []
    for token in tokens:
        if token.type in _SKIPPED:
            continue
        start = offsets[token.start[0] - 1] + token.start[1]
        end = offsets[token.end[0] - 1] + token.end[1]
        if token.type == tokenize.NAME:
            items.append((start, end, token.string))
        else:
            items.append((start, end, None if token.string == "." else ""))
    items += [(start, end, "`" + name) for start, (end, name) in quoted.items()]
    items.sort()
    spans: list[tuple[int, int, str]] = []
    i = 0
    while i < len(items):
        start, _, word = items[i]
        if not word or (i > 0 and items[i - 1][2] is None):  # not a name, or an attribute
            i += 1
            continue
        parts = [word]
        j = i
        while j + 2 < len(items) and items[j + 1][2] is None and items[j + 2][2]:
            j += 2
            parts.append(items[j][2] or "")
        quoted_part = any(p.startswith("`") for p in parts)
        if quoted_part or (len(parts) > 1 and any(keyword.iskeyword(p) for p in parts)):
            spans.append((start, items[j][1], ".".join(p.lstrip("`") for p in parts)))
        i = j + 1
    return spans


def _line_offsets(text: str) -> list[int]:
    offsets = [0]
    for line in text.splitlines(keepends=True):
        offsets.append(offsets[-1] + len(line))
    return offsets


def _apply(text: str, spans: list[tuple[int, int, str]], prefix: str) -> Rewritten:
    result = Rewritten(text)
    pieces: list[str] = []
    position = 0
    by_name: dict[str, str] = {}
    for start, end, name in sorted(spans):
        if not valid_node_name(name):
            raise QuotingError(f"bad node name {name!r} at column {start + 1}")
        placeholder = by_name.get(name)
        if placeholder is None:
            placeholder = by_name[name] = f"{prefix}{len(by_name)}"
            result.names[placeholder] = name
        pieces.append(text[position:start])
        new_start = sum(map(len, pieces))
        pieces.append(placeholder)
        result.spans.append((new_start, len(placeholder), start, end - start))
        position = end
    pieces.append(text[position:])
    result.text = "".join(pieces)
    return result
