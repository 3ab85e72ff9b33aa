"""Edge bundles through the real server and the real CLI (docs/edge.md): a built-in MLP and CNN
bundled (exported on the fly), verified, and served by `aicloud edge serve` in its own process with
its own home and no control plane: /predict and the Open Inference Protocol answer as
`client.models.load` does, and torch is never imported. A bundle with a byte changed, a member added
or removed, or another workspace's signature is refused, naming what failed."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest

from aicloud import Client
from aicloud.testing.server import ServerProcess
from aicloud.wire.tcp import free_port

from helpers import assert_error
from model_files import digits_cnn, digits_like, pixel_rows, register

pytestmark = pytest.mark.integration


@dataclass
class Bundled:
    ref: str
    path: Path
    names: list[str]


@dataclass
class Bundles:
    mlp: Bundled
    cnn: Bundled
    key: str  # the workspace's public key, as `aicloud bundle key` prints it
    key_file: Path


def edge_env(home: Path) -> dict[str, str]:
    """A machine with no control plane: its own home, no aicloud URL or token."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AICLOUD_")}
    env["HOME"] = str(home)
    env["AICLOUD_HOME"] = str(home / ".aicloud")
    home.mkdir(parents=True, exist_ok=True)
    return env


def cli(args: list[str], home: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aicloud", *args],
        env=edge_env(home),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def bundles(server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bundles]:
    tmp = tmp_path_factory.mktemp("bundles")
    suffix = str(time.time_ns())[-8:]
    with Client(url=server.url, token=server.token) as client:
        folder, names = digits_like(tmp / "mlp")
        mlp_ref = register(client, folder, f"edge-mlp-{suffix}")
        name = mlp_ref.split(":")[0]
        client.models.set_alias(name, "production", int(mlp_ref.split(":")[1]))
        mlp = client.models.bundle(f"{name}@production", tmp / "mlp.bundle")
        cnn_ref = register(client, digits_cnn(tmp), f"edge-cnn-{suffix}")
        cnn = client.models.bundle(cnn_ref, tmp / "cnn.bundle")
        key = client.workspaces.signing_key()
    key_file = tmp / "workspace.pub"
    key_file.write_text(key.public_key + "\n")
    yield Bundles(Bundled(mlp_ref, mlp, names), Bundled(cnn_ref, cnn, names), key.public_key, key_file)


def members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        out = {}
        for info in tar:
            f = tar.extractfile(info)
            assert f is not None
            out[info.name] = f.read()
        return out


def write_tar(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_a_bundle_holds_the_onnx_model_its_config_and_a_signed_manifest(bundles: Bundles) -> None:
    files = members(bundles.mlp.path)
    assert set(files) == {"manifest.json", "manifest.sig", "model.onnx", "config.json", "signature.json"}
    manifest = json.loads(files["manifest.json"])
    assert manifest["format"] == "aicloud-bundle/1"
    assert f"{manifest['model']}:{manifest['version']}" == bundles.mlp.ref
    assert manifest["exported_from"]["format"] == "onnx"  # a built-in version, exported on the fly
    assert manifest["exported_from"]["max_abs_diff"] <= 1e-4
    assert set(manifest["files"]) == {"model.onnx", "config.json", "signature.json"}
    config = json.loads(files["config.json"])
    assert config["preprocessing"]["features"] == bundles.mlp.names
    assert json.loads(files["signature.json"])["inputs"][0]["name"] == "pixel_0"
    sig = json.loads(files["manifest.sig"])
    assert sig["algorithm"] == "ed25519"
    assert bundles.key.startswith("ed25519:") and sig["key_id"] == manifest["key_id"]


def test_bundle_verify_accepts_an_untouched_bundle(bundles: Bundles, tmp_path: Path) -> None:
    for b in (bundles.mlp, bundles.cnn):
        done = cli(["bundle", "verify", str(b.path), "--key", str(bundles.key_file)], tmp_path)
        assert done.returncode == 0, done.stderr
        assert "verified" in done.stdout and b.ref in done.stdout.replace("\n", " ")
    done = cli(["bundle", "verify", str(bundles.cnn.path), "--key", bundles.key], tmp_path)  # key as text
    assert done.returncode == 0, done.stderr


def test_the_signing_key_is_public_and_its_private_half_is_no_users_secret(
    client: Client, http: httpx.Client
) -> None:
    body = http.get("/api/v1/workspace/signing-key").json()
    assert set(body) == {"algorithm", "key_id", "public_key", "pem"}
    assert body["pem"].startswith("-----BEGIN PUBLIC KEY-----")
    assert client.workspaces.signing_key().public_key == body["public_key"]  # made once, kept
    assert all(not s.name.startswith("aicloud.") for s in client.secrets.list())
    assert_error(http.delete("/api/v1/secrets/aicloud.bundle-signing-key"), 404)


def test_bundling_another_workspaces_model_is_a_404(
    client: Client, server: ServerProcess, bundles: Bundles, tmp_path: Path, unique: Callable[[str], str]
) -> None:
    other = client.workspaces.create(unique("edge-ws"))
    with httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {other.admin_token.token}"}
    ) as h:
        name, version = bundles.mlp.ref.split(":")
        assert_error(h.post(f"/api/v1/models/{name}/versions/{version}/bundle"), 404)


@dataclass
class Edge:
    proc: subprocess.Popen[str]
    http: httpx.Client
    port: int


@pytest.fixture
def edge_serve(tmp_path: Path) -> Iterator[Callable[..., Edge]]:
    started: list[Edge] = []

    def start(bundle: Path, key: Path, *extra: str) -> Edge:
        port = free_port()
        home = tmp_path / f"edge-home-{port}"
        log = tmp_path / f"edge-{port}.log"
        argv = ["edge", "serve", str(bundle), "--key", str(key), "--port", str(port), *extra]
        with log.open("w") as out:  # the child keeps its own descriptor
            proc = subprocess.Popen(
                [sys.executable, "-m", "aicloud", *argv],
                env=edge_env(home),
                stdout=out,
                stderr=out,
                text=True,
            )
        edge = Edge(proc, httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30), port)
        started.append(edge)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()
            try:
                if edge.http.get("/v2/health/ready").status_code == 200:
                    return edge
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise AssertionError("edge serve did not turn ready")

    yield start
    for e in started:
        e.http.close()
        e.proc.terminate()
        try:
            e.proc.wait(15)
        except subprocess.TimeoutExpired:
            e.proc.kill()
            e.proc.wait()


def torch_loaded(pid: int) -> bool:
    maps = Path(f"/proc/{pid}/maps").read_text()
    return "libtorch" in maps


@pytest.mark.timeout(600)
def test_edge_serve_predicts_as_models_load_with_no_control_plane(
    client: Client, bundles: Bundles, edge_serve: Callable[..., Edge], tmp_path: Path
) -> None:
    import tritonclient.http as triton

    from aicloud.artifacts.bundle import open_bundle, read_public_key
    from aicloud.artifacts.loader import load_model

    for n, b in enumerate((bundles.mlp, bundles.cnn)):
        rows = pixel_rows(b.names, 24, seed=5)[b.names]
        local = client.models.load(b.ref)
        want = local(rows).tolist()
        want_out = local.outputs(rows)
        edge = edge_serve(b.path, bundles.key_file)
        got = edge.http.post("/predict", json={"inputs": rows.to_dict("records")})
        assert got.status_code == 200, got.text
        assert got.json()["outputs"] == want
        # the Open Inference Protocol: metadata and infer, rows of numbers in signature order
        name = b.ref.split(":")[0]
        meta = edge.http.get(f"/v2/models/{name}").json()
        assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 64]}]
        infer = edge.http.post(
            f"/v2/models/{name}/infer",
            json={
                "inputs": [
                    {
                        "name": "input",
                        "datatype": "FP32",
                        "shape": [len(rows), 64],
                        "data": rows.to_numpy().ravel().tolist(),
                    }
                ]
            },
        )
        assert infer.status_code == 200, infer.text
        assert infer.json()["outputs"][0]["data"] == want
        triton_client = triton.InferenceServerClient(url=f"127.0.0.1:{edge.port}")
        try:
            assert triton_client.is_model_ready(name)
            x = rows.to_numpy().astype(np.float32)
            tensor = triton.InferInput("input", list(x.shape), "FP32")
            tensor.set_data_from_numpy(x, binary_data=True)
            assert triton_client.infer(name, [tensor]).as_numpy("output").tolist() == want
        finally:
            triton_client.close()
        # the raw outputs of the bundled ONNX model equal load()'s of the version within 1e-4
        folder = open_bundle(b.path, read_public_key(str(bundles.key_file))).extract(tmp_path / f"m{n}")
        got_out = load_model(folder).outputs(rows)
        assert np.max(np.abs(np.asarray(got_out) - np.asarray(want_out))) <= 1e-4
        assert not torch_loaded(edge.proc.pid)


def test_edge_serve_with_a_token_refuses_calls_without_it(
    bundles: Bundles, edge_serve: Callable[..., Edge], tmp_path: Path
) -> None:
    token_file = tmp_path / "edge.token"
    token_file.write_text("s3cret-edge\n")
    edge = edge_serve(bundles.mlp.path, bundles.key_file, "--token-file", str(token_file))
    row = dict.fromkeys(bundles.mlp.names, 1.0)
    assert_error(edge.http.post("/predict", json={"inputs": [row]}), 401)
    ok = edge.http.post("/predict", json={"inputs": [row]}, headers={"Authorization": "Bearer s3cret-edge"})
    assert ok.status_code == 200, ok.text


def test_the_edge_server_process_never_imports_torch(bundles: Bundles, tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from aicloud.artifacts.bundle import read_public_key\n"
        "from aicloud.edge.serve import load_edge\n"
        f"s = load_edge({str(bundles.cnn.path)!r}, read_public_key({str(bundles.key_file)!r}))\n"
        "assert s.app.state.ready\n"
        "print('torch' in sys.modules, 'pandas' in sys.modules, 'aicloud.server' in sys.modules)\n"
        "s.close()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=edge_env(tmp_path), capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "False", "False"]


# --- tampering: each is refused by `bundle verify` and `edge serve`, naming what failed


def refused(bundle: Path, key: Path | str, home: Path, *expected: str) -> None:
    done = cli(["bundle", "verify", str(bundle), "--key", str(key)], home)
    assert done.returncode == 1, done.stdout
    line = " ".join(done.stderr.split())
    for text in expected:
        assert text in line, line
    assert "Traceback" not in done.stderr
    port = free_port()
    served = cli(["edge", "serve", str(bundle), "--key", str(key), "--port", str(port)], home)
    assert served.returncode == 1, served.stdout
    assert " ".join(served.stderr.split()) == line  # the same refusal; nothing was served


def test_a_byte_changed_in_the_model_is_a_digest_mismatch(bundles: Bundles, tmp_path: Path) -> None:
    raw = bytearray(bundles.mlp.path.read_bytes())
    with tarfile.open(bundles.mlp.path) as tar:
        info = tar.getmember("model.onnx")
        raw[info.offset_data + info.size // 2] ^= 0x01
    bad = tmp_path / "flipped.bundle"
    bad.write_bytes(bytes(raw))
    refused(bad, bundles.key_file, tmp_path, "digest mismatch", "'model.onnx'")


def test_a_byte_changed_in_the_manifest_is_a_signature_failure(bundles: Bundles, tmp_path: Path) -> None:
    files = members(bundles.mlp.path)
    files["manifest.json"] = files["manifest.json"].replace(b'"version": ', b'"version":  ', 1)
    bad = write_tar(tmp_path / "manifest.bundle", files)
    refused(bad, bundles.key_file, tmp_path, "signature check failed")


def test_a_member_added_is_refused(bundles: Bundles, tmp_path: Path) -> None:
    files = members(bundles.mlp.path)
    refused(
        write_tar(tmp_path / "extra.bundle", {**files, "extra.py": b"print('hi')"}),
        bundles.key_file,
        tmp_path,
        "'extra.py'",
    )


def test_a_member_removed_is_refused(bundles: Bundles, tmp_path: Path) -> None:
    files = members(bundles.mlp.path)
    del files["config.json"]
    refused(
        write_tar(tmp_path / "less.bundle", files), bundles.key_file, tmp_path, "'config.json'", "missing"
    )


def test_a_member_swapped_from_another_bundle_is_a_digest_mismatch(bundles: Bundles, tmp_path: Path) -> None:
    files = members(bundles.mlp.path)
    files["model.onnx"] = members(bundles.cnn.path)["model.onnx"]
    refused(
        write_tar(tmp_path / "swap.bundle", files),
        bundles.key_file,
        tmp_path,
        "digest mismatch",
        "'model.onnx'",
    )


def test_another_workspaces_key_is_a_signature_failure(
    client: Client, server: ServerProcess, bundles: Bundles, tmp_path: Path, unique: Callable[[str], str]
) -> None:
    other = client.workspaces.create(unique("edge-other"))
    with Client(url=server.url, token=other.admin_token.token) as c:
        other_key = c.workspaces.signing_key()
    assert other_key.public_key != bundles.key
    refused(bundles.mlp.path, other_key.public_key, tmp_path, "signature check failed", other_key.key_id)


def test_not_a_bundle_and_a_bad_key_are_one_line_errors(bundles: Bundles, tmp_path: Path) -> None:
    junk = tmp_path / "junk.bundle"
    junk.write_bytes(b"not a tar at all" * 100)
    refused(junk, bundles.key_file, tmp_path, "is not a bundle")
    done = cli(["bundle", "verify", str(bundles.mlp.path), "--key", "ed25519:short"], tmp_path)
    assert done.returncode == 1 and "not an Ed25519 public key" in done.stderr
