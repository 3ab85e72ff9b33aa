"""The paging query parameters every list route takes, and the header with the total.

A list route answers ``limit`` items after ``offset`` (both bounded: beyond is a 422) in a stable
order, and ``X-Total-Count`` says how many there are in all, as ``GET /api/v1/runs`` does.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Query, Response

MAX_LIMIT = 1000
MAX_OFFSET = 1_000_000
DEFAULT_LIMIT = 100

Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET, description="skip this many (the start of a page)")]
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description=f"at most this many (up to {MAX_LIMIT})")]


def set_total(response: Response, total: int) -> None:
    """Say how many items the list has in all (every page carries it)."""
    response.headers["X-Total-Count"] = str(total)
