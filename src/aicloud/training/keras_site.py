"""Keras autolog in a ``command`` job without a line in the script: this file is the job's
``sitecustomize.py`` (docs/keras.md).

The bootstrap copies it into a folder of the job's own and puts that folder first on the command's
``PYTHONPATH``. Python runs it at the start of every interpreter of the command; it imports nothing
but the standard library (a ``python`` that never imports keras pays nothing): it adds an import
hook that, once ``keras`` has been imported, calls :func:`aicloud.training.keras.autolog`. It then
runs the ``sitecustomize`` that the rest of the path has, if any (the user's, or the
distribution's). ``AICLOUD_AUTOLOG=0`` (or false/no/off) turns the hook off.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import Any

_HERE = os.path.dirname(os.path.abspath(__file__))
_OFF = ("0", "false", "no", "off")


def _warn(message: str) -> None:
    print(f"[aicloud] warning: {message}", file=sys.stderr, flush=True)


def _off() -> bool:
    return os.environ.get("AICLOUD_AUTOLOG", "1").strip().lower() in _OFF


def _after_keras() -> None:
    if _off():  # also set by the script itself before it imported keras
        return
    try:
        from aicloud.training.keras import autolog

        autolog()
    except Exception as exc:  # the user's script goes on without metrics
        _warn(f"Keras autolog is off: {type(exc).__name__}: {exc}")


class KerasFinder(importlib.abc.MetaPathFinder):
    """Finds nothing itself: for ``keras``, it asks the other finders and makes the module's
    loader call :func:`_after_keras` once the module has run."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != "keras":
            return None
        if self in sys.meta_path:
            sys.meta_path.remove(self)  # once; and the lookup below must not find this finder again
        spec = importlib.util.find_spec(fullname)
        loader: Any = spec.loader if spec is not None else None
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        run = loader.exec_module

        def exec_module(module: ModuleType) -> None:
            run(module)
            _after_keras()

        loader.exec_module = exec_module
        return spec


def install() -> None:
    """Add the hook (unless ``AICLOUD_AUTOLOG`` is off or keras is imported already)."""
    if _off():
        return
    if "keras" in sys.modules:
        _after_keras()
    elif not any(isinstance(f, KerasFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, KerasFinder())


def chain() -> None:
    """Run the next ``sitecustomize`` on the path (Python runs only the first one it finds)."""
    rest = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]
    spec = None
    try:
        spec = importlib.machinery.PathFinder.find_spec("sitecustomize", rest)
        if spec is None or spec.loader is None:
            return
        module = importlib.util.module_from_spec(spec)
        sys.modules["_aicloud_next_sitecustomize"] = module
        spec.loader.exec_module(module)
    except Exception as exc:  # as Python's site module does with a failing sitecustomize
        _warn(f"error in sitecustomize {getattr(spec, 'origin', '?')}: {type(exc).__name__}: {exc}")


if __name__ == "sitecustomize":
    install()
    chain()
