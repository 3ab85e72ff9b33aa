"""What a workload process is told through its environment (see docs/training.md).

The URL and token come through :class:`aicloud.config.Settings` (``AICLOUD_URL``, ``AICLOUD_TOKEN``);
the variables only a workload has are read here, in one place:

========================  ===========================================================================
``AICLOUD_RUN_ID``        the run to log into; without it the runtime works offline
``AICLOUD_JOB_ID``        the job (lineage of registered models)
``AICLOUD_JOB_SPEC``      JSON: ``{"kind", "name", ...spec fields, "resolved_datasets"}``
``AICLOUD_OUTPUT_DIR``    a folder for outputs
``AICLOUD_CPUS``          the cores the job asked for
``AICLOUD_DATASETS``      JSON role → local file, set by the bootstrap for user code
``AICLOUD_ATTEMPT``       0 on the first start, then the number of restarts so far (``max_restarts``)
``RANK``, ``WORLD_SIZE``  this worker's rank and the number of workers (multi-worker jobs; as torchrun)
``LOCAL_RANK``            the worker's rank on this machine
========================  ===========================================================================
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aicloud.config import Settings
from aicloud.errors import ValidationError

_JOB_KEYS = ("kind", "name", "priority", "resolved_datasets")


@dataclass(frozen=True)
class JobDoc:
    """The job as the workload sees it: kind, name, spec, and the resolved dataset versions by role."""

    kind: str
    name: str | None
    spec: dict[str, Any]
    resolved: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str | None) -> JobDoc:
        """Parse ``AICLOUD_JOB_SPEC``: ``{"kind", "name", **spec}`` (flat) or ``{"kind", "name", "spec"}``."""
        if not text:
            return cls(kind="command", name=None, spec={})
        try:
            doc = json.loads(text)
        except ValueError as exc:
            raise ValidationError.field("AICLOUD_JOB_SPEC", f"not valid JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise ValidationError.field("AICLOUD_JOB_SPEC", "must be a JSON object")
        if isinstance(doc.get("spec"), dict):
            spec = dict(doc["spec"])
            resolved = spec.pop("resolved_datasets", None) or doc.get("resolved_datasets") or {}
        else:
            spec = {k: v for k, v in doc.items() if k not in _JOB_KEYS}
            resolved = doc.get("resolved_datasets") or {}
        kind = str(doc.get("kind") or ("train" if "task" in spec else "command"))
        name = doc.get("name")
        return cls(kind=kind, name=str(name) if name else None, spec=spec, resolved=dict(resolved))


@dataclass(frozen=True)
class WorkloadEnv:
    url: str | None = None
    token: str | None = None
    run_id: str | None = None
    job_id: str | None = None
    job: JobDoc = field(default_factory=lambda: JobDoc(kind="command", name=None, spec={}))
    output_dir: Path | None = None
    cpus: int | None = None
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    attempt: int = 0

    @property
    def online(self) -> bool:
        """Whether metrics and models go to a control plane (a run id and a URL are set)."""
        return bool(self.run_id and self.url)

    @property
    def chief(self) -> bool:
        """Whether this is rank 0, the worker that logs params and metrics and saves models."""
        return self.rank == 0

    @property
    def restarts_left(self) -> int:
        """How many more times the control plane will restart this job if it fails."""
        try:
            allowed = int(self.job.spec.get("max_restarts") or 0)
        except (TypeError, ValueError):
            allowed = 0
        return max(0, allowed - self.attempt)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> WorkloadEnv:
        env = os.environ if environ is None else environ
        settings = Settings() if environ is None else None
        url = settings.url if settings is not None else env.get("AICLOUD_URL")
        token = settings.token if settings is not None else env.get("AICLOUD_TOKEN")
        cpus_text = env.get("AICLOUD_CPUS")
        output = env.get("AICLOUD_OUTPUT_DIR")
        return cls(
            url=url.rstrip("/") if url else None,
            token=token or None,
            run_id=env.get("AICLOUD_RUN_ID") or None,
            job_id=env.get("AICLOUD_JOB_ID") or None,
            job=JobDoc.parse(env.get("AICLOUD_JOB_SPEC")),
            output_dir=Path(output) if output else None,
            cpus=int(cpus_text) if cpus_text and cpus_text.isascii() and cpus_text.isdigit() else None,
            rank=_int(env, "RANK", 0),
            world_size=max(1, _int(env, "WORLD_SIZE", 1)),
            local_rank=_int(env, "LOCAL_RANK", 0),
            attempt=_int(env, "AICLOUD_ATTEMPT", 0),
        )

    def default_model_name(self) -> str:
        """The job spec's ``model_name``, else the job's name, else ``model``."""
        name = self.job.spec.get("model_name") or self.job.name
        return str(name) if name else "model"


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    text = (env.get(name) or "").strip()
    if not text:
        return default
    try:
        return int(text)
    except ValueError:
        raise ValidationError.field(name, f"must be an integer, not {text[:40]!r}") from None
