"""Controllers: reconcile loops that drive desired state (the store) to actual state (executors)."""

from __future__ import annotations

from aicloud.controllers.jobs import JobController, LogChunk

__all__ = ["JobController", "LogChunk"]
