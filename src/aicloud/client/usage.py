"""Usage and cost in the SDK: ``client.usage(by="user", since="2024-06-01")``."""

from __future__ import annotations

from datetime import date, datetime
from typing import TYPE_CHECKING, Any

from aicloud.schemas.usage import UsageBy, UsageReport

if TYPE_CHECKING:
    from aicloud.client.http import Transport

__all__ = ["Bound", "UsageBy", "UsageReport", "get_usage"]

Bound = str | date | datetime | None


def _bound(value: Bound) -> str | None:
    """A date or datetime as ISO text (naive datetimes are UTC on the server); text as is."""
    if value is None or isinstance(value, str):
        return value
    return value.isoformat()


def get_usage(
    transport: Transport, by: UsageBy | str = UsageBy.JOB, since: Bound = None, until: Bound = None
) -> UsageReport:
    """The usage report of the workspace: jobs that ended in ``[since, until)``, grouped ``by``
    ``job``, ``user`` or ``day``, with a total; ``serving`` (replica-hours, requests, cost per
    1,000 predictions by deployment), ``storage`` (GiB-months of blobs held) and ``total_cost``.
    A ``date`` for ``until`` includes that day."""
    params: dict[str, Any] = {"by": UsageBy(by).value if isinstance(by, UsageBy) else by}
    for name, value in (("since", _bound(since)), ("until", _bound(until))):
        if value is not None:
            params[name] = value
    return UsageReport.model_validate(transport.json("GET", "/api/v1/usage", params=params))
