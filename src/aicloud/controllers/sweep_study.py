"""The Optuna side of a sweep: the study the sweep controller asks for params and tells results.

The study lives in memory and is *derived*: :meth:`LiveStudy.add` materializes a trial from its
:class:`~aicloud.controllers.sweep_trials.TrialRecord` (params, per-epoch objective, final state), so
a control plane that restarts rebuilds the study from the metadata store's rows and goes on where it
stopped. What Optuna keeps beyond those rows is re-derived too:

* ASHA's rung records (``completed_rung_<k>``, the objective at the first epoch ≥ the rung's epoch,
  set for every rung a trial reached): the pruner makes the same decisions on a rebuilt study as on
  the live one (a unit test checks it against Optuna's own bookkeeping);
* the samplers' random state: each trial's sampler is seeded with (seed, trial number), so sampling
  does not depend on when the control plane last started;
* the grid: trial ``n`` takes point ``n`` of a seeded shuffle of the grid, never a visited one.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalChoiceType,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import FrozenTrial, Trial, TrialState, create_trial

from aicloud.controllers.sweep_trials import TrialRecord
from aicloud.schemas.sweeps import (
    CategoricalSpace,
    IntSpace,
    LogUniformSpace,
    SweepSpec,
    UniformSpace,
    base_train_params,
    grid_points,
    train_value,
)

__all__ = ["LiveStudy", "distributions", "rung_attrs"]

log = logging.getLogger("aicloud.sweeps")
optuna.logging.set_verbosity(optuna.logging.WARNING)

_STATES = {
    "complete": TrialState.COMPLETE,
    "pruned": TrialState.PRUNED,
    "failed": TrialState.FAIL,
    "cancelled": TrialState.FAIL,
    "pending": TrialState.RUNNING,
    "running": TrialState.RUNNING,
}


def _encode_choice(choice: Any) -> CategoricalChoiceType:
    """Optuna's categorical choices are scalars: a list (``hidden``) travels as its JSON text."""
    return json.dumps(choice) if isinstance(choice, list) else choice


def _decode_choice(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) and value.startswith("[") else value


def distributions(spec: SweepSpec) -> dict[str, BaseDistribution]:
    out: dict[str, BaseDistribution] = {}
    for name, space in spec.space.items():
        if isinstance(space, UniformSpace):
            out[name] = FloatDistribution(space.low, space.high)
        elif isinstance(space, LogUniformSpace):
            out[name] = FloatDistribution(space.low, space.high, log=True)
        elif isinstance(space, IntSpace):
            out[name] = IntDistribution(space.low, space.values()[-1], log=space.log, step=space.step)
        else:
            out[name] = CategoricalDistribution([_encode_choice(c) for c in space.choices])
    return out


def _from_train(spec: SweepSpec, name: str, value: Any) -> Any:
    """A trial job's train value back to the Optuna param (None when it is not in the space)."""
    space = spec.space[name]
    if isinstance(space, CategoricalSpace):
        for choice in space.choices:
            if train_value(name, choice, base_train_params(spec)) == value:
                return _encode_choice(choice)
        return None
    if name == "hidden" and isinstance(value, list):
        value = value[0] if value and len(set(value)) == 1 else None
    if isinstance(space, IntSpace):
        return int(value) if isinstance(value, int | float) and float(value).is_integer() else None
    return float(value) if isinstance(value, int | float) else None


def rung_attrs(spec: SweepSpec, intermediate: dict[int, float]) -> dict[str, float]:
    """ASHA's rung records of a trial that reported ``intermediate`` (epoch → objective)."""
    if spec.pruner.type != "asha" or not intermediate:
        return {}
    steps = sorted(intermediate)
    attrs: dict[str, float] = {}
    rung = 0
    while True:
        rung_step = spec.pruner.min_resource * spec.pruner.reduction_factor**rung
        reached = [s for s in steps if s >= rung_step]
        if not reached:
            return attrs
        attrs[f"completed_rung_{rung}"] = intermediate[reached[0]]
        rung += 1


def _pruner(spec: SweepSpec) -> optuna.pruners.BasePruner:
    p = spec.pruner
    if p.type == "asha":
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=p.min_resource, reduction_factor=p.reduction_factor, min_early_stopping_rate=0
        )
    if p.type == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=p.n_startup_trials, n_warmup_steps=p.warmup_steps)
    return optuna.pruners.NopPruner()


def _trial_seed(seed: int, number: int) -> int:
    return (seed * 1_000_003 + number) % 2**32


@dataclass
class LiveStudy:
    """A sweep's Optuna study and which Optuna trial is which trial number."""

    spec: SweepSpec
    study: optuna.Study
    dists: dict[str, BaseDistribution]
    trial_ids: dict[int, int] = field(default_factory=dict)  # trial number → Optuna trial id
    last_step: dict[int, int] = field(default_factory=dict)  # trial number → last epoch reported
    finished: set[int] = field(default_factory=set)  # trial numbers told their final state

    @classmethod
    def create(cls, spec: SweepSpec, records: Iterable[TrialRecord] = ()) -> LiveStudy:
        study = optuna.create_study(
            direction="maximize" if spec.maximize else "minimize",
            pruner=_pruner(spec),
            sampler=optuna.samplers.RandomSampler(seed=spec.sampler.seed),
        )
        live = cls(spec=spec, study=study, dists=distributions(spec))
        for record in records:
            live.add(record)
        return live

    # -- materializing stored trials -------------------------------------------------------------

    def add(self, record: TrialRecord) -> None:
        """Put a stored trial into the study, in the state the store has it."""
        if record.number in self.trial_ids:
            return
        params = {name: _from_train(self.spec, name, value) for name, value in record.params.items()}
        if any(v is None for v in params.values()):
            log.warning(
                "trial %d: params %s are not in the space; left out of the study", record.number, params
            )
            self.finished.add(record.number)
            return
        state = _STATES[record.state]
        value = record.value if state in (TrialState.COMPLETE, TrialState.PRUNED) else None
        if state is TrialState.COMPLETE and value is None:
            state = TrialState.FAIL
        frozen = create_trial(
            state=state,
            value=value,
            params=params,
            distributions={n: self.dists[n] for n in params},
            intermediate_values=dict(record.intermediate),
            system_attrs=rung_attrs(self.spec, record.intermediate),
        )
        self.trial_ids[record.number] = self._add(frozen)
        self.last_step[record.number] = max(record.intermediate, default=0)
        if state is not TrialState.RUNNING:
            self.finished.add(record.number)

    def _add(self, frozen: FrozenTrial) -> int:
        self.study.add_trial(frozen)
        return self.study.get_trials(deepcopy=False)[-1]._trial_id

    # -- new trials --------------------------------------------------------------------------------

    def ask(self, number: int) -> dict[str, Any]:
        """Sample trial ``number``'s params (as the space's values: lists for list choices)."""
        if number in self.trial_ids:
            raise ValueError(f"trial {number} already exists")
        if self.spec.sampler.type == "grid":
            points = grid_points(self.spec)
            order = list(range(len(points)))
            random.Random(self.spec.sampler.seed).shuffle(order)
            point = points[order[number % len(points)]]
            frozen = create_trial(
                state=TrialState.RUNNING,
                params={n: _encode_choice(v) for n, v in point.items()},
                distributions=self.dists,
            )
            self.trial_ids[number] = self._add(frozen)
            self.last_step[number] = 0
            return dict(point)
        seed = _trial_seed(self.spec.sampler.seed, number)
        if self.spec.sampler.type == "tpe":
            self.study.sampler = optuna.samplers.TPESampler(
                seed=seed, n_startup_trials=self.spec.sampler.n_startup_trials
            )
        else:
            self.study.sampler = optuna.samplers.RandomSampler(seed=seed)
        trial = self.study.ask(self.dists)
        self.trial_ids[number] = trial._trial_id
        self.last_step[number] = 0
        return {name: _decode_choice(value) for name, value in trial.params.items()}

    def forget(self, number: int) -> None:
        """Drop a trial that was asked for but never became a job (its number is free again)."""
        if number in self.trial_ids and number not in self.finished:
            self.study.tell(self._trial(number), state=TrialState.FAIL)
        self.trial_ids.pop(number, None)
        self.last_step.pop(number, None)
        self.finished.discard(number)

    # -- results -----------------------------------------------------------------------------------

    def _trial(self, number: int) -> Trial:
        return Trial(self.study, self.trial_ids[number])

    def frozen(self, number: int) -> FrozenTrial:
        return self.study._storage.get_trial(self.trial_ids[number])

    def report(self, number: int, step: int, value: float) -> bool:
        """Report the objective at ``step`` (epochs in order); True when the pruner says stop."""
        if number not in self.trial_ids or number in self.finished or step <= self.last_step.get(number, 0):
            return False
        trial = self._trial(number)
        trial.report(value, step)
        self.last_step[number] = step
        return trial.should_prune()

    def tell(self, number: int, state: str, value: float | None = None) -> None:
        """The trial's final state: ``complete`` (with its value), ``pruned``, ``failed`` or ``cancelled``."""
        if number not in self.trial_ids or number in self.finished:
            return
        optuna_state = _STATES[state]
        if optuna_state is TrialState.COMPLETE and value is None:
            optuna_state = TrialState.FAIL
        value = value if optuna_state is TrialState.COMPLETE else None
        self.study.tell(self._trial(number), value, state=optuna_state)
        self.finished.add(number)
