"""Which optional parts of aicloud are installed.

``pip install aicloud`` is the SDK and the CLI only (httpx, pydantic, typer, rich, PyYAML). The
control plane is ``aicloud[server]``, the workload runtime (jobs and replicas: PyTorch,
safetensors, ONNX Runtime) ``aicloud[train]``. A command or call that needs an extra says which,
in one line (:class:`MissingExtraError`), instead of failing on an import deep inside.

The extras' packages are read from aicloud's own installed metadata (``pyproject.toml`` is the
one list); run from a source tree without metadata, nothing is reported missing.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from importlib import metadata

_NAME = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
_EXTRA = re.compile(r"""extra\s*==\s*["']([^"']+)["']""")


class MissingExtraError(ImportError):
    """A part of aicloud that needs an extra the installation lacks."""

    def __init__(self, what: str, extra: str, missing: Sequence[str]) -> None:
        self.what = what
        self.extra = extra
        self.missing = list(missing)
        more = len(self.missing) - 3
        names = ", ".join(self.missing[:3]) + (f" and {more} more" if more > 0 else "")
        super().__init__(
            f"{what} needs aicloud[{extra}] ({names} not installed): pip install 'aicloud[{extra}]'"
        )


def extra_packages(extra: str) -> list[str]:
    """The distributions ``aicloud[extra]`` adds, by name; [] without aicloud's metadata."""
    try:
        requires = metadata.requires("aicloud") or []
    except metadata.PackageNotFoundError:
        return []
    names = []
    for req in requires:
        spec, _, marker = req.partition(";")
        found = _EXTRA.search(marker)
        name = _NAME.match(spec)
        if found and found.group(1) == extra and name and name.group(1).lower() != "aicloud":
            names.append(name.group(1))
    return names


def installed(name: str) -> bool:
    try:
        metadata.distribution(name)
    except metadata.PackageNotFoundError:
        return False
    return True


def missing_packages(extra: str) -> list[str]:
    """The packages of ``aicloud[extra]`` that are not installed."""
    return [name for name in extra_packages(extra) if not installed(name)]


def require_extra(extra: str, what: str, packages: Sequence[str] | None = None) -> None:
    """Raise :class:`MissingExtraError` when ``packages`` (default: all of the extra's) are missing."""
    missing = [p for p in packages if not installed(p)] if packages is not None else missing_packages(extra)
    if missing:
        raise MissingExtraError(what, extra, missing)
