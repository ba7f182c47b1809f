"""UCUM unit syntax: is a unit string well formed?

A small recursive-descent parser for the case-sensitive UCUM grammar (terms joined with
`.` and `/`, parentheses, integer exponents, `{annotations}`, metric prefixes) over the
atoms that Norwegian lab and radiology reports use. It checks form, not dimensions: no
maintained PyPI package validates UCUM syntax without pulling in a unit-conversion stack.
"""

from __future__ import annotations

import functools
import re

PREFIXES = (
    "da", "Y", "Z", "E", "P", "T", "G", "M", "k", "h", "d", "c", "m", "u", "n", "p", "f", "a",
    "z", "y",
)  # fmt: skip
# Atoms that take metric prefixes.
METRIC_ATOMS = frozenset(
    {
        "m", "g", "L", "l", "s", "mol", "kat", "U", "Pa", "Hz", "N", "J", "W", "V", "A",
        "Ohm", "S", "F", "T", "Wb", "H", "Gy", "Sv", "Bq", "Ci", "eq", "osm", "bar", "cal",
        "K", "Cel", "[IU]", "[iU]", "t", "sr", "rad", "lm", "lx", "C", "dyn", "erg", "P",
        "St", "G", "b",
    }
)  # fmt: skip
# Atoms without prefixes.
PLAIN_ATOMS = frozenset(
    {
        "%", "min", "h", "d", "wk", "mo", "a", "[mmHg]", "mm[Hg]", "cm[H2O]", "[pH]", "[ppm]",
        "[ppb]", "[ppth]", "[pptr]", "[HPF]", "[LPF]", "[arb'U]", "[degF]", "[in_i]",
        "[lb_av]", "[oz_av]", "[ft_i]", "[drp]", "[CFU]", "[PFU]", "[FFU]", "[beth'U]",
        "[GPL'U]", "[MPL'U]", "[APL'U]", "[knk'U]", "[mclg'U]", "[tb'U]", "[iU]", "deg",
        "'", "''", "10*", "10^", "[pi]", "[wbc]", "[cells]", "[S]",
    }
)  # fmt: skip
_ANNOTATION = re.compile(r"\{[\x21-\x7a\x7c\x7e ]*\}")
_INT = re.compile(r"[+-]?\d+")
_DIGITS = re.compile(r"\d+")
_SYMBOL = re.compile(r"(?:\[[^\[\]]+\]|[A-Za-z%'])(?:[A-Za-z'_]|\[[^\[\]]+\])*|10\*|10\^")


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def fail(self) -> None:
        raise ValueError(f"unexpected input at position {self.pos}")

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def term(self) -> None:
        if self.peek() == "/":
            self.pos += 1
        self.component()
        while self.peek() in (".", "/") and self.peek():
            self.pos += 1
            self.component()

    def component(self) -> None:
        ch = self.peek()
        if ch == "(":
            self.pos += 1
            self.term()
            if self.peek() != ")":
                self.fail()
            self.pos += 1
            self.exponent()
            self.annotation()
            return
        if ch == "{":
            if not self.annotation():
                self.fail()
            return
        digits = _DIGITS.match(self.text, self.pos)
        if digits and not self.text.startswith(("10*", "10^"), self.pos):
            self.pos = digits.end()
            self.annotation()
            return
        symbol = _SYMBOL.match(self.text, self.pos)
        if not symbol:
            self.fail()
            return
        # The symbol regex is greedy over letters: shrink until the atom is known, and
        # let the rest be an exponent or annotation.
        end = symbol.end()
        while end > self.pos and not _known(self.text[self.pos : end]):
            end -= 1
        if end == self.pos:
            self.fail()
        self.pos = end
        self.exponent()
        self.annotation()

    def exponent(self) -> None:
        match = _INT.match(self.text, self.pos)
        if match:
            self.pos = match.end()

    def annotation(self) -> bool:
        match = _ANNOTATION.match(self.text, self.pos)
        if match:
            self.pos = match.end()
            return True
        return False


def _known(symbol: str) -> bool:
    if symbol in PLAIN_ATOMS or symbol in METRIC_ATOMS:
        return True
    return any(
        symbol.startswith(prefix) and symbol[len(prefix) :] in METRIC_ATOMS for prefix in PREFIXES
    )


@functools.lru_cache(maxsize=4096)
def unit_problem(unit: str) -> str | None:
    """Why `unit` is not well-formed UCUM, or None. The empty string is not a unit.
    Pure, so cached: a lab sends the same few hundred units all day."""
    if not unit:
        return "is empty"
    if unit != unit.strip() or " " in _ANNOTATION.sub("", unit):
        return "contains spaces"
    parser = _Parser(unit)
    try:
        parser.term()
    except ValueError as exc:
        return f"is not valid UCUM ({exc})"
    if parser.pos != len(unit):
        return f"is not valid UCUM (unexpected input at position {parser.pos})"
    return None


def is_valid_unit(unit: str) -> bool:
    return unit_problem(unit) is None
