"""Entities of experiment tracking (the MLflow tracking API): experiments and run artifacts.

An experiment is a named group of runs in a workspace; a run names its experiment
(``Run.experiment``). A run artifact is a file logged to a run, kept as an encrypted blob.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True)
class Experiment:
    id: str
    workspace_id: str
    name: str
    deleted: bool
    created_at: datetime
    updated_at: datetime
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RunArtifact:
    """``path`` is relative to the run's artifact root (``plots/loss.png``); ``digest`` its blob."""

    run_id: str
    path: str
    digest: str
    size: int
    created_at: datetime
