"""Keras autolog's pure parts (docs/keras.md): epoch logs as metrics, fit's params, the switch, the
command's environment, and the sitecustomize import hook, with a stand-in ``keras`` package (the
real one is not imported here)."""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from aicloud.artifacts.keras_export import final_metrics, is_keras_model
from aicloud.schemas.training import check_env_names
from aicloud.training import keras_site
from aicloud.training.bootstrap import keras_env
from aicloud.training.keras import autolog_enabled, default_backend, epoch_metrics, fit_params


class _Scalar:
    def __init__(self, value: float) -> None:
        self.value = value

    def item(self) -> float:
        return self.value


def test_epoch_logs_become_finite_float_metrics() -> None:
    logs = {"loss": 0.5, "val_loss": _Scalar(0.25), "mae": math.nan, "lr": "n/a", "accuracy": 1}
    assert epoch_metrics(logs) == {"loss": 0.5, "val_loss": 0.25, "accuracy": 1.0}
    assert epoch_metrics(None) == {}


@pytest.mark.parametrize(
    ("value", "on"),
    [(None, True), ("1", True), ("yes", True), ("0", False), ("False", False), (" off ", False)],
)
def test_the_autolog_switch(value: str | None, on: bool) -> None:
    env = {} if value is None else {"AICLOUD_AUTOLOG": value}
    assert autolog_enabled(env) is on


def test_fit_params_name_the_fit_and_its_compiled_optimizer_and_loss() -> None:
    Adam = type("Adam", (), {"learning_rate": 0.001})
    model = SimpleNamespace(optimizer=Adam(), loss="mse")
    assert fit_params(model, {"epochs": 5, "validation_split": 0.2}) == {
        "epochs": 5,
        "batch_size": 32,
        "validation_split": 0.2,
        "optimizer": "Adam",
        "learning_rate": 0.001,
        "loss": "mse",
    }
    assert fit_params(SimpleNamespace(), {"batch_size": 8}) == {"epochs": 1, "batch_size": 8}


def test_the_backend_defaults_to_torch_unless_set() -> None:
    env: dict[str, str] = {}
    assert default_backend(env) == "torch" and env == {"KERAS_BACKEND": "torch"}
    assert default_backend({"KERAS_BACKEND": "tensorflow"}) == "tensorflow"


def test_a_command_gets_the_hook_first_on_its_pythonpath(tmp_path: Path) -> None:
    env = {"PYTHONPATH": "/opt/mine"}
    keras_env(env, tmp_path)
    site = tmp_path / ".aicloud-site"
    assert env["PYTHONPATH"] == f"{site}:/opt/mine" and env["KERAS_BACKEND"] == "torch"
    assert (site / "sitecustomize.py").read_text() == Path(keras_site.__file__).read_text()
    off = {"AICLOUD_AUTOLOG": "0", "KERAS_BACKEND": "tensorflow"}
    keras_env(off, tmp_path / "other")
    assert "PYTHONPATH" not in off and off["KERAS_BACKEND"] == "tensorflow"


def test_aicloud_autolog_is_the_one_aicloud_variable_a_job_may_set() -> None:
    assert check_env_names({"AICLOUD_AUTOLOG": "0"}) == {"AICLOUD_AUTOLOG": "0"}
    with pytest.raises(ValueError, match="AICLOUD_TOKEN"):
        check_env_names({"AICLOUD_TOKEN": "x"})


@pytest.fixture
def fake_keras(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """A ``keras`` package first on sys.path; the hook's call to autolog is recorded."""
    package = tmp_path / "fake" / "keras"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("LOADED = True\n")
    calls: list[str] = []
    monkeypatch.syspath_prepend(str(tmp_path / "fake"))
    for name in [n for n in sys.modules if n == "keras" or n.startswith("keras.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(keras_site, "_after_keras", lambda: calls.append(str(sys.modules["keras"].LOADED)))
    monkeypatch.setattr(sys, "meta_path", list(sys.meta_path))
    monkeypatch.delenv("AICLOUD_AUTOLOG", raising=False)
    yield calls
    sys.modules.pop("keras", None)


def test_the_hook_calls_autolog_once_keras_is_imported(fake_keras: list[str]) -> None:
    keras_site.install()
    keras_site.install()  # idempotent
    assert sum(isinstance(f, keras_site.KerasFinder) for f in sys.meta_path) == 1
    assert fake_keras == []
    import keras  # the stand-in

    assert keras.LOADED and fake_keras == ["True"]
    assert not any(isinstance(f, keras_site.KerasFinder) for f in sys.meta_path)


def test_the_hook_is_off_with_aicloud_autolog_0(
    fake_keras: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AICLOUD_AUTOLOG", "0")
    keras_site.install()
    assert not any(isinstance(f, keras_site.KerasFinder) for f in sys.meta_path)


def test_the_next_sitecustomize_on_the_path_still_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    mine = tmp_path / "user"
    mine.mkdir()
    (mine / "sitecustomize.py").write_text("import os\nos.environ['USER_SITE_RAN'] = '1'\n")
    monkeypatch.delenv("USER_SITE_RAN", raising=False)
    monkeypatch.setattr(sys, "path", [keras_site._HERE, str(mine), *sys.path])
    keras_site.chain()
    assert __import__("os").environ["USER_SITE_RAN"] == "1"
    (mine / "sitecustomize.py").write_text("raise RuntimeError('broken')\n")
    keras_site.chain()  # a failing one is a warning, as Python's own site module does
    assert "error in sitecustomize" in capsys.readouterr().err
    sys.modules.pop("_aicloud_next_sitecustomize", None)


def test_keras_models_are_told_by_their_classes() -> None:
    Model = type("Model", (), {"__module__": "keras.src.models.model"})
    Sequential = type("Sequential", (Model,), {"__module__": "keras.src.models.sequential"})
    assert is_keras_model(Sequential()) and not is_keras_model(object())
    history = SimpleNamespace(history={"loss": [2.0, 1.0], "val_loss": [math.inf], "lr": []})
    assert final_metrics(SimpleNamespace(history=history)) == {"loss": 1.0}
    assert final_metrics(object()) == {}
