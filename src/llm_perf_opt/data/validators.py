"""attrs validators shared by the domain models.

Each raises :class:`FieldValueError` (a ValueError) whose message starts with
the field name and the offending value, so the loaders can report
``<file>: field <path>: <problem>`` on one line.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import PurePosixPath, PureWindowsPath
from typing import Any

import attrs

Validator = Callable[[Any, "attrs.Attribute[Any]", Any], None]


class FieldValueError(ValueError):
    """A field value outside its allowed set; ``field_name`` is the attrs field."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field_name = field_name
        self.problem = message


def _check_finite(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise FieldValueError(name, f"{value!r} is not a number")
    if not math.isfinite(value):
        raise FieldValueError(name, f"{value!r} is not finite")


def finite(inst: Any, attribute: attrs.Attribute[Any], value: float) -> None:
    """Any finite number (JSON has no NaN or infinity)."""
    _check_finite(attribute.name, value)


def positive(inst: Any, attribute: attrs.Attribute[Any], value: float) -> None:
    """Finite and > 0."""
    _check_finite(attribute.name, value)
    if value <= 0:
        raise FieldValueError(attribute.name, f"{value!r} must be > 0")


def non_negative(inst: Any, attribute: attrs.Attribute[Any], value: float) -> None:
    """Finite and >= 0."""
    _check_finite(attribute.name, value)
    if value < 0:
        raise FieldValueError(attribute.name, f"{value!r} must be >= 0")


def at_least(minimum: int) -> Validator:
    """Integer >= ``minimum``."""

    def check(inst: Any, attribute: attrs.Attribute[Any], value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            raise FieldValueError(attribute.name, f"{value!r} is not an integer")
        if value < minimum:
            raise FieldValueError(attribute.name, f"{value!r} must be >= {minimum}")

    return check


def in_range(low: float, high: float) -> Validator:
    """Finite number in the closed interval [low, high]."""

    def check(inst: Any, attribute: attrs.Attribute[Any], value: float) -> None:
        _check_finite(attribute.name, value)
        if not low <= value <= high:
            raise FieldValueError(attribute.name, f"{value!r} outside [{low}, {high}]")

    return check


def optional(validator: Validator) -> Validator:
    """Apply ``validator`` unless the value is None."""

    def check(inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value is not None:
            validator(inst, attribute, value)

    return check


def values_in_range(low: float, high: float) -> Validator:
    """Every value of a mapping is a finite number in [low, high]."""

    def check(inst: Any, attribute: attrs.Attribute[Any], value: Mapping[Any, float]) -> None:
        for key, item in value.items():
            name = f"{attribute.name}[{str(getattr(key, 'value', key))!r}]"
            _check_finite(name, item)
            if not low <= item <= high:
                raise FieldValueError(name, f"{item!r} outside [{low}, {high}]")

    return check


def non_empty(inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    """A non-empty string or collection (strings: not only whitespace)."""
    empty = not value.strip() if isinstance(value, str) else len(value) == 0
    if empty:
        raise FieldValueError(attribute.name, "must not be empty")


def is_absolute_path(value: str) -> bool:
    """True for a POSIX or Windows absolute path string."""
    return PurePosixPath(value).is_absolute() or PureWindowsPath(value).is_absolute()


def absolute_path(inst: Any, attribute: attrs.Attribute[Any], value: str) -> None:
    """An absolute filesystem path (POSIX '/...' or Windows 'C:\\...')."""
    if not isinstance(value, str) or not value or not is_absolute_path(value):
        raise FieldValueError(attribute.name, f"{value!r} is not an absolute path")


def aware_datetime(inst: Any, attribute: attrs.Attribute[Any], value: datetime) -> None:
    """A timezone-aware datetime (serialised as ISO 8601 with offset)."""
    if not isinstance(value, datetime):
        raise FieldValueError(attribute.name, f"{value!r} is not a datetime")
    if value.tzinfo is None or value.utcoffset() is None:
        raise FieldValueError(attribute.name, f"{value.isoformat()} has no timezone offset")


def regex(inst: Any, attribute: attrs.Attribute[Any], value: str) -> None:
    """A string that compiles as a Python regular expression."""
    try:
        re.compile(value)
    except re.error as exc:
        raise FieldValueError(attribute.name, f"{value!r} is not a valid regex ({exc})") from exc


_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:+-]*$")


def is_safe_id(value: str) -> bool:
    """Whether ``value`` is usable as a folder name (:func:`safe_id`'s rule)."""
    return bool(_SAFE_ID.fullmatch(value))


def safe_id(inst: Any, attribute: attrs.Attribute[Any], value: str) -> None:
    """An identifier usable as a folder name: letters, digits, '._:+-', no separators."""
    if not isinstance(value, str) or not _SAFE_ID.fullmatch(value):
        raise FieldValueError(
            attribute.name, f"{value!r} must match {_SAFE_ID.pattern} (no spaces or path separators)"
        )


def equals(expected: str) -> Validator:
    """A string equal to ``expected`` (schema version pins)."""

    def check(inst: Any, attribute: attrs.Attribute[Any], value: str) -> None:
        if value != expected:
            raise FieldValueError(attribute.name, f"{value!r} is not the supported version {expected!r}")

    return check
