"""Reading a deployment file (`aicloud deploy create/apply -f`): its keys, env values, service path."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer

from aicloud.cli.common import UsageError
from aicloud.cli.deploy_file import parse_env, read_deploy_file
from aicloud.schemas.serving import DeploymentSpec, memory_mb


def test_the_example_file_is_a_valid_spec() -> None:
    spec = read_deploy_file(Path(__file__).resolve().parents[2] / "examples" / "deploy.yaml")
    name = spec.pop("name")
    parsed = DeploymentSpec.model_validate(spec)
    assert name == "digits" and parsed.model == "digits@production" and parsed.limits.memory_mb == 1024


def test_an_unknown_key_is_named_with_the_known_ones(tmp_path: Path) -> None:
    file = tmp_path / "deploy.yaml"
    file.write_text("name: d\nmodel: m\nreplicas: 2\n")
    with pytest.raises(UsageError, match=r"unknown key\(s\) 'replicas'.*max_replicas"):
        read_deploy_file(file)


def test_env_values_become_text_and_service_is_next_to_the_file(tmp_path: Path) -> None:
    (tmp_path / "svc").mkdir()
    file = tmp_path / "deploy.yaml"
    file.write_text(
        "name: d\nservice: svc\nentrypoint: a.py:A\nenv: {PORT: 8080, DEBUG: true, EMPTY: null}\n"
    )
    spec = read_deploy_file(file)
    assert spec["env"] == {"PORT": "8080", "DEBUG": "true", "EMPTY": ""}
    assert spec["service"] == tmp_path / "svc"
    file.write_text("name: d\nservice: nowhere\nentrypoint: a.py:A\n")
    with pytest.raises(UsageError, match="nowhere"):
        read_deploy_file(file)


def test_env_flags_and_memory_sizes() -> None:
    assert parse_env(["A=1", "B=x=y", "C="]) == {"A": "1", "B": "x=y", "C": ""}
    with pytest.raises(typer.BadParameter):
        parse_env(["NOVALUE"])
    assert [memory_mb(v) for v in (512, "512", "512Mi", "2Gi", "2G", "300M")] == [
        512,
        512,
        512,
        2048,
        2048,
        300,
    ]
    with pytest.raises(ValueError, match="2Gi"):
        memory_mb("2TB")
