"""The console's lists, one page at a time, each paged and counted in the store (newest first,
ties by id, so pages are stable). Runs, their series (LTTB) and compare come from
``server.services.runs``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from aicloud.entities import DatasetSummary, Job, JobKind, JobStatus, Model
from aicloud.entities.serving import Deployment
from aicloud.store import MetadataStore

T = TypeVar("T")

#: The rows of one page of a console list.
PAGE = 50


@dataclass(frozen=True)
class Page(Generic[T]):
    """``items`` from ``offset`` of a list of ``total`` items."""

    items: list[T]
    offset: int
    limit: int
    total: int

    def pager(self) -> dict[str, Any]:
        """What a template's ``ui.pager`` takes."""
        return {
            "offset": self.offset,
            "limit": self.limit,
            "total": self.total,
            "has_next": self.offset + len(self.items) < self.total,
        }


def _page(items: Callable[[], list[T]], count: Callable[[], int], offset: int, limit: int) -> Page[T]:
    return Page(items(), offset, limit, count())


def jobs_page(
    store: MetadataStore, workspace_id: str, *, status: JobStatus | None, offset: int, limit: int = PAGE
) -> Page[Job]:
    jobs = store.jobs
    return _page(
        lambda: jobs.list(workspace_id, status=status, offset=offset, limit=limit),
        lambda: jobs.count(workspace_id, status=status),
        offset,
        limit,
    )


def sweeps_page(store: MetadataStore, workspace_id: str, *, offset: int, limit: int = PAGE) -> Page[Job]:
    jobs, sweep = store.jobs, JobKind.SWEEP
    return _page(
        lambda: jobs.list(workspace_id, kind=sweep, offset=offset, limit=limit),
        lambda: jobs.count(workspace_id, kind=sweep),
        offset,
        limit,
    )


def datasets_page(
    store: MetadataStore, workspace_id: str, *, offset: int, limit: int = PAGE
) -> Page[DatasetSummary]:
    datasets = store.datasets
    return _page(
        lambda: datasets.list_datasets(workspace_id, offset=offset, limit=limit),
        lambda: datasets.count_datasets(workspace_id),
        offset,
        limit,
    )


def models_page(store: MetadataStore, workspace_id: str, *, offset: int, limit: int = PAGE) -> Page[Model]:
    models = store.models
    return _page(
        lambda: models.list_models(workspace_id, offset=offset, limit=limit),
        lambda: models.count_models(workspace_id),
        offset,
        limit,
    )


def deployments_page(
    store: MetadataStore, workspace_id: str, *, offset: int, limit: int = PAGE
) -> Page[Deployment]:
    deployments = store.deployments
    return _page(
        lambda: deployments.list(workspace_id, offset=offset, limit=limit),
        lambda: deployments.count(workspace_id),
        offset,
        limit,
    )
