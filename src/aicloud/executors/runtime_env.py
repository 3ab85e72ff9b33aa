"""The control plane's side of runtime environments: wrapping a workload's argv in the prelude.

:func:`wrap` turns ``[python, -m, aicloud.training.bootstrap]`` into ``[python, envrun.py, --, python,
-m, aicloud.training.bootstrap]`` and adds what the prelude (:mod:`aicloud.executors.envrun`) reads:
the spec (``AICLOUD_RUNTIME_ENV``), the workspace's cache folder (``AICLOUD_ENVS_DIR``, which the
sandbox binds read-write for that workload and no other workspace's), the bounds and the base's
fingerprint. :func:`collect_envs` is the control plane's hourly clean-up of unused environments.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from aicloud import __version__
from aicloud.config import Settings

__all__ = ["ENVRUN", "ENVS_DIR_VAR", "collect_envs", "workspace_envs_dir", "wrap"]

ENVRUN = str(Path(__file__).with_name("envrun.py").resolve())
ENVS_DIR_VAR = "AICLOUD_ENVS_DIR"


def workspace_envs_dir(settings: Settings, workspace_id: str) -> Path:
    """The cache folder of one workspace's environments (tenants never share a writable env)."""
    return settings.resolved_envs_dir / workspace_id


def wrap(
    argv: list[str],
    env: dict[str, str],
    runtime_env: dict[str, Any] | None,
    settings: Settings,
    workspace_id: str,
) -> list[str]:
    """``argv`` (an interpreter and its arguments) run through the prelude when ``runtime_env`` is
    set; ``env`` gets the prelude's variables. ``argv`` unchanged without one."""
    if not runtime_env:
        return argv
    folder = workspace_envs_dir(settings, workspace_id)
    folder.mkdir(parents=True, exist_ok=True)
    # workloads of the workspace run under a uid each (sandbox as root): they share this cache
    os.chmod(folder, 0o777)
    env.update(
        AICLOUD_RUNTIME_ENV=json.dumps(
            {"requirements": runtime_env.get("requirements") or [], "python": runtime_env.get("python")}
        ),
        AICLOUD_ENVS_DIR=str(folder),
        AICLOUD_ENV_BUILD_TIMEOUT_S=str(settings.env_build_timeout_s),
        AICLOUD_ENV_MAX_MB=str(settings.env_max_mb),
        AICLOUD_ENV_FINGERPRINT=f"aicloud {__version__}",
    )
    python = runtime_env.get("python")
    if python and python != f"{sys.version_info.major}.{sys.version_info.minor}":
        found = other_python(str(python))
        if found is not None:  # the prelude builds on it; the sandbox mounts its prefix read-only
            env.update(AICLOUD_ENV_PYTHON=found[0], AICLOUD_ENV_PYTHON_PREFIX=found[1])
    return [argv[0], ENVRUN, "--", *argv]


@functools.cache
def other_python(minor: str) -> tuple[str, str] | None:
    """The real interpreter of ``python<minor>`` on this machine and its installation prefix: the one on
    PATH, else a pyenv installation of that minor (``$PYENV_ROOT/versions/<minor>.*``, which pyenv's
    shims do not run unless it is selected); None when there is none."""
    root = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv")
    candidates = [shutil.which(f"python{minor}")]
    candidates += [str(p) for p in sorted(root.glob(f"versions/{minor}.*/bin/python{minor}"), reverse=True)]
    probe = "import os, sys; print(os.path.realpath(sys.executable)); print(sys.base_prefix)"
    for exe in filter(None, candidates):
        try:
            done = subprocess.run(
                [exe, "-c", probe],
                capture_output=True,
                text=True,
                timeout=30,
                check=True,
                stdin=subprocess.DEVNULL,
            )
            real, prefix = done.stdout.split()[:2]
        except (OSError, subprocess.SubprocessError, ValueError):
            continue
        return real, prefix
    return None


def collect_envs(settings: Settings) -> list[Path]:
    """Remove environments unused for ``env_max_age_days`` (and builds left over as long)."""
    from aicloud.executors.envrun import collect

    return collect(settings.resolved_envs_dir, settings.env_max_age_days * 86400)
