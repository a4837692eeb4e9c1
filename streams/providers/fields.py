"""Type-checked reads of an upstream's JSON: a field of the wrong type is bad_response, never a crash.

Absent and null are the same (compatible servers differ there); anything else must have the
type the API documents. Hot-path checks (per streamed chunk) are inlined in the decoders.
"""

from __future__ import annotations

from typing import Any

from .errors import ErrorReporter


def obj(errors: ErrorReporter, parent: dict, key: str) -> dict:
    """parent[key] as an object; absent or null: an empty one."""
    value = parent.get(key)
    if value is None:
        return {}
    if type(value) is not dict:
        raise errors.wrong_type(key, value, "an object")
    return value


def count(errors: ErrorReporter, usage: dict, key: str) -> int | None:
    """A token count: an integer, or None when absent."""
    value = usage.get(key)
    if value is not None and type(value) is not int:
        raise errors.wrong_type(f"usage.{key}", value, "an integer")
    return value


def text(errors: ErrorReporter, holder: dict, key: str, field: str) -> str:
    """A text field: a string ("" when absent)."""
    value = holder.get(key)
    if value is None:
        return ""
    if type(value) is not str:
        raise errors.wrong_type(field, value, "a string")
    return value


def reason(errors: ErrorReporter, value: Any, field: str) -> str | None:
    """A finish/stop reason: a non-empty string, or None when absent or empty."""
    if value is None or value == "":
        return None
    if type(value) is not str:
        raise errors.wrong_type(field, value, "a string")
    return value
