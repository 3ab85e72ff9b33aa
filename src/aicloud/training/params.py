"""A job's params: what a sweep trial (or a command job's ``params``) hands the user's code.

A command job whose spec has ``params`` (every trial of a sweep over your own code has them: the
base ``command.params`` with the trial's sampled values merged in) gets them twice in its environment:

* ``AICLOUD_PARAMS``: all of them as one JSON object (typed: numbers, booleans, strings, lists);
* ``AICLOUD_PARAM_<NAME>``: each one alone, ``<NAME>`` upper-cased; a string as it is, any other
  value as JSON (``0.001``, ``3``, ``true``, ``[64, 32]``).

:func:`params` reads them back, typed::

    from aicloud.training import params
    p = params(lr=1e-3, layers=2)     # the trial's values; these defaults outside a job
    lr, layers = p["lr"], p["layers"]

The module is stdlib only (the bootstrap and the user's code both import it).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

__all__ = ["PARAMS_VAR", "PARAM_PREFIX", "param_env", "params"]

PARAMS_VAR = "AICLOUD_PARAMS"
PARAM_PREFIX = "AICLOUD_PARAM_"


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def param_env(values: Mapping[str, Any]) -> dict[str, str]:
    """The environment variables that carry ``values`` (empty when there are none)."""
    if not values:
        return {}
    env = {PARAMS_VAR: json.dumps(dict(values), sort_keys=True)}
    for name, value in values.items():
        env[PARAM_PREFIX + name.upper()] = _text(value)
    return env


def params(defaults: Mapping[str, Any] | None = None, /, **kwargs: Any) -> dict[str, Any]:
    """This job's params (typed, from ``AICLOUD_PARAMS``) over ``defaults`` and ``kwargs``.

    Outside a job (or in a job without params) it is the defaults alone, so a script runs the same
    on a laptop. A malformed ``AICLOUD_PARAMS`` raises ``ValueError`` naming the variable.
    """
    out: dict[str, Any] = {**(defaults or {}), **kwargs}
    raw = os.environ.get(PARAMS_VAR)
    if not raw:
        return out
    try:
        given = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{PARAMS_VAR} is not JSON: {exc}") from None
    if not isinstance(given, dict):
        raise ValueError(f"{PARAMS_VAR} is not a JSON object")
    out.update(given)
    return out
