"""``deploy.yaml``: a deployment's spec as a file, for ``aicloud deploy create -f`` and ``deploy apply -f``.

The file holds what ``client.deployments.create(**spec)`` takes (docs/serving.md, "Deployment
files")::

    name: digits
    model: digits@production        # or service: ./svc (a file or folder, relative to this file)
                                    #    entrypoint: app.py:Echo
    min_replicas: 0
    max_replicas: 4
    env: {LOG_LEVEL: info}
    secrets: [HF_TOKEN]
    memory: 2Gi
    runtime_env:                    # packages installed for each replica (docs/runtime-envs.md)
      requirements: [lightgbm]
      requirements_file: requirements.txt   # relative to this file

An unknown key is an error that names it and lists the known ones, before anything reaches the
server; values are checked by the server as an API call's are (422 naming the field). Flags given
on the command line next to ``-f`` override the file's values.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from aicloud.cli.common import UsageError, read_spec_file
from aicloud.schemas.runtime_env import expand_runtime_env
from aicloud.schemas.serving import DeploymentCreate

#: Keys of a deployment file besides the spec's own fields: the Service's entry point (``service``
#: is then a path, not a blob digest).
FILE_ONLY = ("entrypoint",)


def known_keys() -> list[str]:
    return sorted({*DeploymentCreate.model_fields, *FILE_ONLY})


def read_deploy_file(path: Path) -> dict[str, Any]:
    """The keyword arguments of ``client.deployments.create`` from a deploy file (``name`` among them).

    Raises:
        UsageError: the file cannot be read or parsed, has an unknown key, or a ``service`` that is
            not a file or folder next to it.
    """
    doc = read_spec_file(path, "the deployment file")
    unknown = sorted(str(k) for k in doc if k not in known_keys())
    if unknown:
        raise UsageError(
            f"{path}: unknown key(s) {', '.join(map(repr, unknown))}; a deployment file takes: "
            f"{', '.join(known_keys())} (docs/serving.md)"
        )
    spec = dict(doc)
    if "env" in spec:
        env = spec["env"]
        if not isinstance(env, dict):
            raise UsageError(f"{path}: env must be a mapping of NAME: value, not {env!r}")
        spec["env"] = {str(k): _env_value(v) for k, v in env.items()}
    if spec.get("service") is not None:
        service = path.parent / str(spec["service"])
        if not service.exists():
            raise UsageError(
                f"{path}: service {spec['service']!r} is no file or folder (next to {path.name})"
            )
        spec["service"] = service
    if spec.get("runtime_env") is not None:
        try:  # its requirements_file is relative to this file
            spec["runtime_env"] = expand_runtime_env(spec["runtime_env"], base=path.parent)
        except ValueError as exc:
            raise UsageError(f"{path}: {exc}") from None
    return spec


def _env_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def parse_env(pairs: list[str]) -> dict[str, str]:
    """``["K=V", ...]`` (``--env``) as a mapping; a :class:`typer.BadParameter` for a pair without ``=``."""
    env: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"--env {pair!r}: give NAME=VALUE")
        env[key] = value
    return env


def given_flags(ctx: typer.Context, values: dict[str, Any]) -> dict[str, Any]:
    """The entries of ``values`` whose flag was typed on the command line (not left at its default)."""
    # by name: typer carries its own copy of click, whose ParameterSource is not click's
    sources = {k: getattr(ctx.get_parameter_source(k), "name", None) for k in values}
    return {k: v for k, v in values.items() if sources[k] == "COMMANDLINE"}
