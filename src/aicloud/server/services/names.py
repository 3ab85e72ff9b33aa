"""Checks shared by the routes and the services: names, ids and version numbers from a request."""

from __future__ import annotations

import re

from aicloud.errors import ValidationError
from aicloud.schemas import NAME_PATTERN

_NAME = re.compile(NAME_PATTERN)
_ID = re.compile(r"^[a-z]{2,4}_[a-z0-9]{8,40}\Z")
#: ASCII digits only: ``str.isdigit()`` also accepts ``³`` and other digits ``int()`` refuses.
_DIGITS = re.compile(r"[0-9]{1,12}")


def check_name(value: str, field: str = "name") -> str:
    """Refuse names that could be path tricks (``..``, ``/``, ``%2e%2e`` once decoded, absolute paths)."""
    if not _NAME.fullmatch(value):
        raise ValidationError.field(
            field,
            f"{value[:120]!r} is not a valid name: use letters, digits, '-', '_' or '.', "
            "starting with a letter or digit, at most 100 characters, and no '..'",
        )
    return value


def check_id(value: str, field: str = "id") -> str:
    if not _ID.fullmatch(value):
        raise ValidationError.field(field, f"{value[:120]!r} is not a valid id")
    return value


def parse_version(value: str) -> int | None:
    """``latest`` → None, else a positive integer."""
    if value == "latest":
        return None
    if _DIGITS.fullmatch(value) and 0 < int(value) < 2**31:
        return int(value)
    raise ValidationError.field(
        "version", f"{value[:40]!r} is not a version: use a positive integer or 'latest'"
    )
