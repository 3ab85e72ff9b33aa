"""The runtime environment of a workload: extra Python packages (and a Python version) for a command
job, a deployment's replicas or any job kind whose spec has the field.

``runtime_env: {requirements: ["lightgbm==4.*", ...], python: "3.11"}``. The environment is built (or
found in the cache) inside the workload before its code starts (:mod:`aicloud.executors.envrun`);
see ``docs/runtime-envs.md``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["MAX_REQUIREMENTS", "RuntimeEnv", "expand_runtime_env", "read_requirements_file"]

MAX_REQUIREMENTS = 200
_PYTHON = re.compile(r"^3\.\d{1,2}$")


class RuntimeEnv(BaseModel):
    """Packages installed for one workload on top of the control plane's own (see the module)."""

    model_config = ConfigDict(extra="forbid")

    requirements: list[str] = Field(
        default_factory=list,
        max_length=MAX_REQUIREMENTS,
        description="PEP 508 requirements (`lightgbm`, `xgboost>=2`, `pkg[extra]==1.0`); no pip options.",
    )
    python: str | None = Field(
        default=None,
        description="Python minor version (`3.11`); None: the control plane's own. Another minor "
        "needs that interpreter installed on the node.",
    )

    @field_validator("requirements")
    @classmethod
    def _pep508(cls, values: list[str]) -> list[str]:
        try:
            from packaging.requirements import InvalidRequirement, Requirement
        except ImportError:  # a thin install without packaging (the server has it and checks first)
            return [v.strip() for v in values]
        out = []
        for raw in values:
            text = raw.strip()
            if not text:
                raise ValueError("a requirement is empty")
            if text.startswith("-"):
                raise ValueError(f"{text!r}: pip options are not accepted, only requirements")
            if len(text) > 500:
                raise ValueError(f"{text[:40]!r}...: a requirement is at most 500 characters")
            try:
                req = Requirement(text)
            except InvalidRequirement as exc:
                raise ValueError(f"{text!r} is not a PEP 508 requirement: {exc}") from None
            if req.url and not req.url.startswith(("https://", "http://")):
                raise ValueError(f"{text!r}: a requirement URL must be http(s), not a local path")
            out.append(str(req))
        return out

    @field_validator("python")
    @classmethod
    def _minor(cls, value: str | None) -> str | None:
        if value is not None and not _PYTHON.match(value):
            raise ValueError(f"{value!r} is not a Python minor version such as '3.11'")
        return value


def read_requirements_file(path: str | Path) -> list[str]:
    """The requirements of a ``requirements.txt``: one a line, comments and blank lines dropped (an
    option line such as ``-e .`` is kept, and refused by :class:`RuntimeEnv`)."""
    lines = []
    for line in Path(path).read_text().splitlines():
        text = line.split(" #", 1)[0].strip() if not line.lstrip().startswith("#") else ""
        if text:
            lines.append(text)
    return lines


def expand_runtime_env(
    runtime_env: dict[str, Any] | None,
    requirements: list[str] | None = None,
    requirements_file: str | os.PathLike[str] | None = None,
    base: Path | None = None,
) -> dict[str, Any] | None:
    """A ``runtime_env`` as the server takes it, from what the SDK and CLI accept: ``runtime_env`` (may
    hold ``requirements_file``, relative to ``base``: a job or deploy file's folder), plus
    ``requirements`` and the lines of ``requirements_file``. None when nothing is asked for.

    Raises:
        ValueError: ``runtime_env`` is not a mapping, or a requirements file cannot be read.
    """
    if runtime_env is not None and not isinstance(runtime_env, dict):
        raise ValueError(f"runtime_env must be a mapping (requirements, python), not {runtime_env!r}")
    out = dict(runtime_env or {})
    reqs = list(out.get("requirements") or [])
    files = [out.pop("requirements_file", None), requirements_file]
    for file in files:
        if file is None:
            continue
        path = Path(file)
        if base is not None and not path.is_absolute():
            path = base / path
        try:
            reqs += read_requirements_file(path)
        except OSError as exc:
            raise ValueError(f"runtime_env requirements_file {str(path)!r}: {exc.strerror or exc}") from None
    reqs += list(requirements or [])
    if reqs:
        out["requirements"] = reqs
    return out or None
