"""Verifiers that compare text: ``exact``, ``numeric``, ``regex``, ``contains``,
``json_schema``.

Feedback says what is wrong with the answer, never what the reference is: the
expected value, pattern or phrases appear in ``details`` only.
"""

from __future__ import annotations

import json
import re
from fractions import Fraction
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from core.answer_format import last_number
from critics.registry import ParamsVerifier, quote, register
from critics.verdict import Verdict

_STRICT = ConfigDict(extra="forbid", frozen=True)


def _passed(feedback: str = "correct", **details: Any) -> Verdict:
    return Verdict(passed=True, score=1.0, feedback=feedback, details=details)


def _failed(feedback: str, score: float = 0.0, **details: Any) -> Verdict:
    return Verdict(passed=False, score=score, feedback=feedback, details=details)


# ---------------------------------------------------------------- exact


class ExactParams(BaseModel):
    model_config = _STRICT

    expected: str | int | float
    """The reference answer."""
    case_sensitive: bool = False
    """Compare letter case too."""
    normalize_whitespace: bool = True
    """Strip the ends and collapse inner runs of whitespace before comparing."""


def _normalize(text: str, params: ExactParams) -> str:
    text = " ".join(text.split()) if params.normalize_whitespace else text
    return text if params.case_sensitive else text.casefold()


@register("exact")
class ExactVerifier(ParamsVerifier):
    """Passes when the answer equals ``expected`` (after normalization)."""

    Params = ExactParams

    async def check(self, answer: str, params: ExactParams) -> Verdict:
        expected = str(params.expected)
        if _normalize(answer, params) == _normalize(expected, params):
            return _passed(expected=expected)
        if not answer.strip():
            return _failed("the answer is empty", expected=expected)
        return _failed(f"answer {quote(answer)} does not match the expected answer",
                       expected=expected)


# ---------------------------------------------------------------- numeric

_LATEX_FRAC = re.compile(r"\\[dt]?frac\s*\{([^{}]+)\}\s*\{([^{}]+)\}")
_THOUSANDS = re.compile(r"^[-+]?\d{1,3}(?:,\d{3})+(?:\.\d+)?$")


def parse_number(text: str) -> Fraction | None:
    """Parse a whole string as one number (exactly, as a fraction), else None.

    Accepts ints, decimals, scientific notation, ``3/4``, ``\\frac{3}{4}``, thousands
    separators (``1,234``), a unicode minus, surrounding ``$`` and a trailing ``%``
    (``50%`` reads as 50, the way the number was written).
    """
    text = text.strip().strip("$").strip()
    text = text.replace("−", "-").replace("\\!", "").replace("{,}", ",")
    text = _LATEX_FRAC.sub(r"(\1)/(\2)", text)
    text = re.sub(r"^\((.+)\)/\((.+)\)$", r"\1/\2", text)
    text = re.sub(r"\s*/\s*", "/", text).rstrip("%").strip()
    if _THOUSANDS.match(text):
        text = text.replace(",", "")
    if not text or len(text) > 200:
        return None
    try:
        if "/" in text:
            num, den = text.split("/", 1)
            return Fraction(num) / Fraction(den)
        return Fraction(text)
    except (ValueError, ZeroDivisionError):
        return None


class NumericParams(BaseModel):
    model_config = _STRICT

    expected: int | float | str
    """The reference number; a string may be anything :func:`parse_number` reads."""
    tolerance: float = Field(1e-6, ge=0)
    """Absolute tolerance."""
    rel_tolerance: float = Field(0.0, ge=0)
    """Relative tolerance (a fraction of ``|expected|``); the looser of the two wins."""
    fallback_last_number: bool = True
    """When the answer is not a bare number, judge the last number written in it."""

    @field_validator("expected", mode="before")
    @classmethod
    def _parseable(cls, value: Any) -> Any:
        if isinstance(value, bool) or parse_number(str(value)) is None:
            raise ValueError(f"not a number: {value!r}")
        return value


@register("numeric")
class NumericVerifier(ParamsVerifier):
    """Passes when the answer is within tolerance of ``expected``; compared exactly as
    fractions, so big integers and 1/3 do not suffer float rounding."""

    Params = NumericParams

    async def check(self, answer: str, params: NumericParams) -> Verdict:
        # repr() first: Fraction(0.1) would be the binary float, not one tenth.
        expected = parse_number(repr(params.expected) if isinstance(params.expected, float)
                                else str(params.expected))
        assert expected is not None  # validated with the params
        details: dict[str, Any] = {"expected": str(params.expected), "used_fallback": False}
        value = parse_number(answer)
        shown = answer.strip()
        if value is None and params.fallback_last_number:
            last = last_number(answer)
            value = parse_number(last) if last is not None else None
            details["used_fallback"] = value is not None
            shown = last or shown
        if value is None:
            return _failed(f"expected a number, got {quote(answer)}", **details)
        details["parsed"] = shown
        allowed = max(Fraction(params.tolerance), Fraction(params.rel_tolerance) * abs(expected))
        if abs(value - expected) <= allowed:
            note = " (read from the last number; reply with just the number)" \
                if details["used_fallback"] else ""
            return _passed("correct" + note, **details)
        if details["used_fallback"]:
            return _failed(f"no bare number in the answer; its last number, {shown}, is "
                           "wrong. Reply with just the final number.", **details)
        return _failed(f"answer {shown} is wrong", **details)


# ---------------------------------------------------------------- regex


class RegexParams(BaseModel):
    model_config = _STRICT

    pattern: str
    """A Python regular expression."""
    mode: Literal["fullmatch", "search"] = "fullmatch"
    """``fullmatch``: the whole (stripped) answer must match; ``search``: any part."""
    ignore_case: bool = False

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as error:
            raise ValueError(f"invalid regular expression: {error}") from None
        return value


@register("regex")
class RegexVerifier(ParamsVerifier):
    """Passes when the answer matches ``pattern`` (the pattern may encode the answer,
    so feedback does not show it)."""

    Params = RegexParams

    async def check(self, answer: str, params: RegexParams) -> Verdict:
        flags = re.IGNORECASE if params.ignore_case else 0
        text = answer.strip()
        match = (re.fullmatch if params.mode == "fullmatch" else re.search)(
            params.pattern, text, flags)
        if match:
            return _passed(pattern=params.pattern)
        return _failed(f"answer {quote(answer)} is not in the required form",
                       pattern=params.pattern)


# ---------------------------------------------------------------- contains


class ContainsParams(BaseModel):
    model_config = _STRICT

    substrings: list[str] = Field(min_length=1)
    """Phrases to look for."""
    mode: Literal["all", "any"] = "all"
    case_sensitive: bool = False

    @field_validator("substrings", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


@register("contains")
class ContainsVerifier(ParamsVerifier):
    """Passes when the answer contains all (or any) ``substrings``. In ``all`` mode the
    score is the fraction found, a graded reward."""

    Params = ContainsParams

    async def check(self, answer: str, params: ContainsParams) -> Verdict:
        def norm(text: str) -> str:
            return text if params.case_sensitive else text.casefold()

        haystack = norm(answer)
        found = [s for s in params.substrings if norm(s) in haystack]
        total = len(params.substrings)
        details = {"substrings": params.substrings, "found": len(found)}
        if params.mode == "any":
            if found:
                return _passed(**details)
            return _failed("the answer contains none of the required phrases", **details)
        if len(found) == total:
            return _passed(**details)
        return _failed(f"the answer is missing {total - len(found)} of {total} required "
                       "phrases", score=len(found) / total, **details)


# ---------------------------------------------------------------- json_schema

_FENCED_JSON = re.compile(r"^```[a-zA-Z]*\s*\n(.*?)\n?```$", re.DOTALL)
_REVEALING = {"const", "enum"}
"""Schema keywords whose error message would print the allowed value(s)."""


class JsonSchemaParams(BaseModel):
    model_config = _STRICT

    schema_: dict[str, Any] = Field(alias="schema")
    """A JSON Schema (any draft jsonschema knows; ``$schema`` picks it)."""

    @field_validator("schema_")
    @classmethod
    def _valid_schema(cls, value: dict[str, Any]) -> dict[str, Any]:
        import jsonschema

        try:
            jsonschema.validators.validator_for(value).check_schema(value)
        except jsonschema.SchemaError as error:
            raise ValueError(f"invalid JSON Schema: {error.message}") from None
        return value


@register("json_schema")
class JsonSchemaVerifier(ParamsVerifier):
    """Passes when the answer parses as JSON (a ```json fence is tolerated) and is
    valid against ``schema``; feedback lists up to three violations."""

    Params = JsonSchemaParams

    async def check(self, answer: str, params: JsonSchemaParams) -> Verdict:
        import jsonschema

        text = answer.strip()
        fenced = _FENCED_JSON.match(text)
        if fenced:
            text = fenced.group(1)
        try:
            document = json.loads(text)
        except json.JSONDecodeError as error:
            return _failed(f"the answer is not valid JSON: {error.msg} at line "
                           f"{error.lineno} column {error.colno}")
        validator = jsonschema.validators.validator_for(params.schema_)(params.schema_)
        errors = sorted(validator.iter_errors(document), key=lambda e: list(e.absolute_path))
        if not errors:
            return _passed()
        lines = []
        for error in errors[:3]:
            where = "/".join(str(p) for p in error.absolute_path) or "(root)"
            message = ("value is not one of the allowed values" if error.validator in _REVEALING
                       else error.message)
            lines.append(f"at {where}: {message[:160]}")
        more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
        return _failed("the JSON does not match the schema: " + "; ".join(lines) + more,
                       errors=len(errors))
