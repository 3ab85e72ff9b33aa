"""Rich progress bars for transfers, shared by the SDK (``progress=True``) and the CLI."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

Advance = Callable[[int], None]


@contextmanager
def transfer_bar(description: str, total: int | None, enabled: bool = True) -> Iterator[Advance]:
    """Yields ``advance(nbytes)``; draws a bar on stderr when ``enabled``."""
    if not enabled:
        yield lambda _n: None
        return
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        transient=False,
    ) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.advance(task, n)


def steps_bar(enabled: bool) -> Progress:
    """A bar of counted steps (a job's epochs, a sweep's trials) with an ``info`` field; inert when
    not ``enabled``. Add the task with ``bar.add_task(name, total=..., info=...)``."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        disable=not enabled,
    )
