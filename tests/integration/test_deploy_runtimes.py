"""A deployment's ``runtime`` through the real server (docs/serving.md, "Runtimes"): the built-in MLP
and CNN deployed with ``runtime: auto`` and each runtime that can run them answer as
``client.models.load`` does, each replica says which runtime serves it (``auto``: with the p50s it
measured), a runtime that cannot run the version is a 422 at create and update, and one that
becomes unable (the alias moved to a CNN) fails the start with a message saying why; the CLI's
``deploy create/update --runtime`` and ``deploy show``."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from test_cli import run_cli

from aicloud import Client
from aicloud.artifacts.architectures import CNN
from aicloud.artifacts.format import save_builtin
from aicloud.client import Deployment
from aicloud.errors import ValidationError
from aicloud.testing.server import ServerProcess

from helpers import assert_error
from model_files import digits_like, trained_like


def register(client: Client, folder: Path, name: str) -> str:
    files = {p.name: client.blobs.upload(p.read_bytes()) for p in sorted(folder.iterdir())}
    config = json.loads((folder / "config.json").read_text())
    out = client.models.register_version(
        name, files, signature=config.get("signature") or {}, config=config, metrics={}
    )
    return f"{name}:{out['version']}"


def cnn_like(folder: Path) -> Path:
    """The digits-like config (64 standardized pixels → 10 labels) on the built-in CNN."""
    mlp, _ = digits_like(folder / "template")
    config = json.loads((mlp / "config.json").read_text())
    config = {k: v for k, v in config.items() if k not in ("format", "architecture")}
    config["task"] = "image-classification"
    return save_builtin(folder / "cnn", trained_like(CNN([8, 8], 10, hidden=[32]), seed=3), config)


def pixel_rows(names: list[str], n: int) -> pd.DataFrame:
    rng = np.random.default_rng(7)
    means = np.array([i % 7 for i in range(len(names))], dtype=float)
    return pd.DataFrame(rng.normal(means, 1.5, (n, len(names))), columns=names)


def runtime_of(client: Client, name: str) -> str:
    """The runtime line of the deployment's ready replica (the API's ``replicas[].runtime``)."""
    deadline = time.monotonic() + 30
    while True:
        ready = [r for r in client.deployments.get(name).info.replicas if r.state.value == "ready"]
        if ready and ready[0].runtime:
            return ready[0].runtime
        assert time.monotonic() < deadline, f"no runtime reported for {name}: {ready}"
        time.sleep(0.2)


def delete_all(client: Client, deployments: list[Deployment]) -> None:
    for d in deployments:
        d.delete()
    deadline = time.monotonic() + 60
    names = {d.name for d in deployments}
    while names & {d.name for d in client.deployments.list()} and time.monotonic() < deadline:
        time.sleep(0.2)


@pytest.mark.timeout(900)
@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_each_runtime_answers_as_the_loaded_model(
    client: Client, tmp_path: Path, unique: Callable[[str], str], kind: str
) -> None:
    folder, names = digits_like(tmp_path / "mlp")
    if kind == "cnn":
        folder = cnn_like(tmp_path)
    ref = register(client, folder, unique(f"rt-{kind}"))
    rows = pixel_rows(names, 24)
    want = [int(v) for v in client.models.load(ref)(rows)]
    runtimes = ["auto", "torch", "onnxruntime"] + (["numpy"] if kind == "mlp" else [])
    deployments = [
        client.deployments.create(unique(f"rt-{kind}-{rt}"), model=ref, runtime=rt) for rt in runtimes
    ]
    try:
        for runtime, dep in zip(runtimes, deployments, strict=True):
            dep.wait_ready(timeout=300)
            assert dep.info.spec["runtime"] == runtime
            assert dep.predict(rows.to_dict(orient="records")) == want, runtime
            assert dep.predict(rows.to_numpy().tolist()) == want, runtime
            line = runtime_of(client, dep.name)
            if runtime == "auto":
                # the choice, why, and the p50 of every runtime that can serve the model
                chosen = line.split(" ", 1)[0]
                assert chosen in ("torch", "onnxruntime", "numpy"), line
                assert "auto: fastest of those matching torch within 0.0001" in line, line
                for able in runtimes[1:]:
                    assert f"{able} " in line.split("(p50 b1/b32: ", 1)[1], line
            else:
                assert line == f"{runtime} (as the deployment asks)", line
    finally:
        delete_all(client, deployments)


def test_a_runtime_that_cannot_serve_the_version_is_refused(
    client: Client, tmp_path: Path, unique: Callable[[str], str]
) -> None:
    name = unique("rt-refused")
    mlp_folder, _ = digits_like(tmp_path / "mlp")
    mlp_ref = register(client, mlp_folder, name)
    cnn_ref = register(client, cnn_like(tmp_path), name)
    with pytest.raises(ValidationError, match="numpy runs only the built-in MLP") as refused:
        client.deployments.create(unique("rt-numpy-cnn"), model=cnn_ref, runtime="numpy")
    assert refused.value.status_code == 422
    assert refused.value.details[0]["field"] == "runtime"
    with pytest.raises(ValidationError) as unknown:
        client.deployments.create(unique("rt-unknown"), model=mlp_ref, runtime="tensorrt")
    assert unknown.value.status_code == 422
    # update: the same check against the new version
    client.models.set_alias(name, "production", int(mlp_ref.rsplit(":", 1)[1]))
    dep = client.deployments.create(unique("rt-alias"), model=f"{name}@production", runtime="numpy")
    try:
        dep.wait_ready(timeout=300)
        assert runtime_of(client, dep.name) == "numpy (as the deployment asks)"
        with pytest.raises(ValidationError, match="numpy runs only the built-in MLP"):
            dep.update(model=cnn_ref)
        # the alias moves to the CNN: not knowable at create time, so the new replica fails to
        # start, saying why, and the deployment fails with that message
        client.models.set_alias(name, "production", int(cnn_ref.rsplit(":", 1)[1]))
        deadline = time.monotonic() + 300
        while (info := client.deployments.get(dep.name).info).status.value != "failed":
            assert time.monotonic() < deadline, info
            time.sleep(0.3)
        assert "runtime 'numpy' cannot serve this version" in (info.message or ""), info.message
    finally:
        delete_all(client, [dep])


def test_the_cli_sets_the_runtime_and_shows_the_choice(
    client: Client, server: ServerProcess, tmp_path: Path, unique: Callable[[str], str]
) -> None:
    folder, _ = digits_like(tmp_path / "mlp")
    ref = register(client, folder, unique("rt-cli"))
    name = unique("rt-cli")
    run_cli(server, "deploy", "create", name, "--model", ref, "--runtime", "onnxruntime")
    try:
        runtime_of(client, name)  # the replica is ready and its line was read
        shown = run_cli(server, "deploy", "show", name).stdout
        assert "runtime onnxruntime (as the deployment asks)" in shown, shown
        run_cli(server, "deploy", "update", name, "--runtime", "auto")
        deadline = time.monotonic() + 120
        while "(auto: fastest of those matching torch" not in run_cli(server, "deploy", "show", name).stdout:
            assert time.monotonic() < deadline
            time.sleep(0.5)
        bad = run_cli(server, "deploy", "update", name, "--runtime", "tensorrt", check=False)
        assert bad.returncode != 0 and "runtime" in bad.stdout + bad.stderr
    finally:
        delete_all(client, [client.deployments.get(name)])


def test_a_service_takes_no_runtime(http: httpx.Client, unique: Callable[[str], str]) -> None:
    body = {
        "name": unique("rt-svc"),
        "service": {"code": "sha256:" + "0" * 64, "entrypoint": "svc.py:Echo"},
        "runtime": "auto",
    }
    err = assert_error(http.post("/api/v1/deployments", json=body), 422)
    assert "a service runs its own code" in err["message"]


def test_an_unset_runtime_is_stored_as_before_the_field_existed(
    client: Client, http: httpx.Client, tmp_path: Path, unique: Callable[[str], str]
) -> None:
    folder, _ = digits_like(tmp_path / "mlp")
    ref = register(client, folder, unique("rt-unset"))
    name = unique("rt-unset")
    dep = client.deployments.create(name, model=ref)
    try:
        assert "runtime" not in dep.info.spec  # a spec stored earlier compares equal: no roll
        again = http.put(f"/api/v1/deployments/{name}", json={"model": ref})
        assert again.status_code == 200, again.text
        assert again.json()["generation"] == dep.info.generation
        assert "runtime" not in again.json()["spec"]
    finally:
        delete_all(client, [dep])
