"""Getting a pydantic model out of an LLM's free text (the fallback when structured output is missing).

Order of attempts: the first JSON object anywhere in the text (code fences and prose
around it are fine); then, for schemas with a single numeric field (a price), the first
number in the text ("$1,299.99" -> 1299.99).
"""

from __future__ import annotations

import json
import re
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

T = TypeVar("T", bound=BaseModel)

_NUMBER = re.compile(r"(?<![\w.])-?\$?\s?(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?")
_MAX_STARTS = 200


class NotParseable(ValueError):
    """The text holds nothing that validates against the schema; the message says why."""


def extract_json_object(text: str) -> dict[str, Any] | None:
    """The first JSON object in `text`, or None."""
    decoder = json.JSONDecoder()
    for count, match in enumerate(re.finditer(r"\{", text)):
        if count >= _MAX_STARTS:
            break
        try:
            value, _ = decoder.raw_decode(text, match.start())
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            return value
    return None


def extract_number(text: str) -> float | None:
    """The first number in `text` (thousands separators and a leading $ allowed), or None."""
    match = _NUMBER.search(text)
    if not match:
        return None
    whole, fraction = match.group(1).replace(",", ""), match.group(2) or ""
    value = float(whole + fraction)
    return -value if match.group(0).lstrip().startswith("-") else value


def _single_number_field(schema: type[BaseModel]) -> str | None:
    fields = schema.model_fields
    if len(fields) != 1:
        return None
    name, info = next(iter(fields.items()))
    return name if info.annotation in (float, int) else None


def _summary(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors()[:3]:
        loc = ".".join(str(p) for p in error["loc"]) or "(root)"
        parts.append(f"{loc}: {error['msg']}")
    more = exc.error_count() - len(parts)
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def coerce(text: str, schema: type[T]) -> T:
    """`schema` validated from the first JSON object in `text` (or its first number)."""
    obj = extract_json_object(text)
    problem = "no JSON object in the reply"
    if obj is not None:
        try:
            return schema.model_validate(obj)
        except ValidationError as exc:
            problem = f"JSON does not match {schema.__name__}: {_summary(exc)}"
    field = _single_number_field(schema)
    if field is not None:
        number = extract_number(text)
        if number is not None:
            try:
                return schema.model_validate({field: number})
            except ValidationError as exc:
                problem = f"number {number} does not fit {schema.__name__}: {_summary(exc)}"
    snippet = " ".join(text.split())[:120]
    raise NotParseable(f"{problem} (reply began: {snippet!r})" if snippet else f"{problem} (empty reply)")


def validation_summary(exc: ValidationError) -> str:
    """A short, one-line account of a pydantic validation error."""
    return _summary(exc)


__all__ = ["NotParseable", "coerce", "extract_json_object", "extract_number", "validation_summary"]
