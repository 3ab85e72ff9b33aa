"""aicloud.training session without a control plane: offline mode, the job document, archive
extraction, the retry of one-off calls. Against a stand-in control plane and in job processes:
tests/integration/test_training_runtime.py."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from aicloud.artifacts.architectures import MLP
from aicloud.artifacts.archive import extract_archive
from aicloud.artifacts.loader import load_model
from aicloud.client.retry import retrying
from aicloud.errors import InvalidDataError, UnavailableError, ValidationError
from aicloud.training import session
from aicloud.training.env import JobDoc

from session_env import clean_env  # noqa: F401 (an autouse fixture)

# ---------------------------------------------------------------------------------------------------------
# offline


def test_offline_mode_writes_local_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    session.log_params({"lr": 0.1, "layers": [2, 3]})
    session.log_metric("loss", 0.5)
    session.log_metric("loss", torch.tensor(0.25))
    session.log_metric("acc", np.float32(0.75), step=np.int64(10))
    session.log_metric("loss", float("nan"))  # skipped, with a warning
    session.flush()
    lines = [json.loads(x) for x in (tmp_path / "aicloud-run" / "metrics.jsonl").read_text().splitlines()]
    assert [(p["name"], p["step"], p["value"]) for p in lines] == [
        ("loss", 0, 0.5),
        ("loss", 1, 0.25),
        ("acc", 10, 0.75),
    ]
    assert json.loads((tmp_path / "aicloud-run" / "params.json").read_text()) == {"lr": 0.1, "layers": [2, 3]}
    out = capsys.readouterr()
    assert "loss=0.25 (step 1)" in out.out and "non-finite" in out.err
    with pytest.raises(ValidationError):
        session.log_metric("loss", 1.0, step=-1)


def test_offline_save_model_plain_pytorch(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    out = session.save_model(model, example_input=torch.zeros(1, 4))
    folder = tmp_path / "aicloud-model"
    assert out["path"] == str(folder) and set(out["files"]) == {"config.json", "model.onnx"}
    x = np.random.default_rng(0).random((3, 4), dtype=np.float32)
    with torch.inference_mode():
        expected = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(load_model(folder)(x), expected, atol=1e-5)
    with pytest.raises(ValidationError, match="example_input"):
        session.save_model(model)
    # a built-in architecture is saved as safetensors, replacing the ONNX file
    session.save_model(MLP(4, [3], 2), signature={"inputs": [{"name": f"f{i}"} for i in range(4)]})
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]


def test_job_doc_parses_both_forms() -> None:
    flat = JobDoc.parse(
        json.dumps({"kind": "train", "name": "n", "task": "t", "resolved_datasets": {"train": {}}})
    )
    assert (flat.kind, flat.name, flat.spec, flat.resolved) == ("train", "n", {"task": "t"}, {"train": {}})
    nested = JobDoc.parse(
        json.dumps({"kind": "command", "spec": {"command": "x", "resolved_datasets": {"a": {}}}})
    )
    assert (nested.kind, nested.spec, nested.resolved) == ("command", {"command": "x"}, {"a": {}})


def test_extract_archive_refuses_escapes(tmp_path: Path) -> None:
    def archive(*members: tarfile.TarInfo) -> Path:
        path = tmp_path / "a.tar.gz"
        with tarfile.open(path, "w:gz") as tar:
            for m in members:
                tar.addfile(m, io.BytesIO(b"x" * m.size) if m.isfile() else None)
        return path

    def file(name: str) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        info.size = 1
        return info

    def link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        info.type, info.linkname = kind, target
        return info

    dest = tmp_path / "code"
    for members, why in (
        ([file("../evil")], "'..'"),
        ([file("ok/../../evil")], "'..'"),
        ([file("/etc/evil")], "absolute path"),
        ([link("passwd", "/etc/passwd")], "outside"),
        ([link("up", "../../secret")], "outside"),
        ([file("a"), link("hard", "../a", tarfile.LNKTYPE)], "outside"),
    ):
        with pytest.raises(InvalidDataError, match=why):
            extract_archive(archive(*members), dest)
    assert not (tmp_path / "evil").exists()
    assert extract_archive(archive(file("src/main.py"), link("cur", "src/main.py")), dest) == 2
    assert (dest / "src" / "main.py").read_bytes() == b"x"
    (tmp_path / "junk.tar.gz").write_bytes(b"not a tar")
    with pytest.raises(InvalidDataError, match="cannot be extracted"):
        extract_archive(tmp_path / "junk.tar.gz", dest)


def test_one_off_calls_wait_for_a_restarting_control_plane(capsys: pytest.CaptureFixture[str]) -> None:
    calls: list[int] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise UnavailableError("cannot reach aicloud")
        return "ok"

    assert retrying(flaky, "GET /x") == "ok" and len(calls) == 3
    assert "GET /x: cannot reach aicloud; retrying" in capsys.readouterr().err

    def down() -> str:
        raise UnavailableError("down")

    def bad() -> str:
        raise ValidationError("bad")

    with pytest.raises(UnavailableError):
        retrying(down, "x", seconds=0.1)
    with pytest.raises(ValidationError):  # not transient: raised at once
        retrying(bad, "x")
