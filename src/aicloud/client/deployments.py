"""Deployments in the SDK: serve a model or your own Service, call it, scale it, roll it."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from aicloud.errors import AicloudError, NotFoundError
from aicloud.schemas import TokenCreated
from aicloud.schemas.serving import DeploymentOut

if TYPE_CHECKING:
    from aicloud.client import Client


def _rows(rows: Any) -> list[Any]:
    """A DataFrame, a 2-D array or a list of rows/dicts → JSON-ready rows."""
    if hasattr(rows, "to_dict") and hasattr(rows, "columns"):
        return list(rows.to_dict(orient="records"))
    if hasattr(rows, "tolist"):
        return list(rows.tolist())
    return list(rows)


class Deployment:
    """A deployment and its endpoint (``url``: ``<server>/v1/endpoints/<name>``)."""

    def __init__(self, client: Client, out: DeploymentOut) -> None:
        self._client = client
        self._out = out

    def __repr__(self) -> str:
        return f"Deployment(name={self.name!r}, status={self._out.status.value!r})"

    @property
    def name(self) -> str:
        return self._out.name

    @property
    def info(self) -> DeploymentOut:
        return self._out

    @property
    def url(self) -> str:
        return f"{self._client.url}/v1/endpoints/{self.name}"

    @property
    def status(self) -> str:
        return self.refresh()._out.status.value

    def refresh(self) -> Deployment:
        self._out = DeploymentOut.model_validate(
            self._client._transport.json("GET", f"/api/v1/deployments/{self.name}")
        )
        return self

    def wait_ready(self, timeout: float = 120.0, poll_s: float = 0.2) -> Deployment:
        """Block until a replica of the current generation serves (or the deployment is scaled to
        zero, when the next request starts one); raises on failure or timeout."""
        deadline = time.monotonic() + timeout
        while True:
            self.refresh()
            status = self._out.status.value
            if status == "ready" and any(
                r.state.value == "ready" and r.generation == self._out.generation for r in self._out.replicas
            ):
                return self
            if status == "scaled_to_zero":
                return self
            if status == "failed":
                raise AicloudError(f"deployment {self.name} failed: {self._out.message}")
            if time.monotonic() > deadline:
                why = f": {self._out.message}" if self._out.message else ""  # e.g. no edge node matches
                raise AicloudError(
                    f"deployment {self.name} not ready after {timeout} s (status {status}{why})"
                )
            time.sleep(poll_s)

    def call(self, path: str, json: Any = None, **kwargs: Any) -> Any:
        """POST to ``<endpoint>/<path>`` through the gateway; returns the decoded JSON."""
        return self._client._transport.json(
            "POST", f"/v1/endpoints/{self.name}/{path.lstrip('/')}", json=json, **kwargs
        )

    def predict(self, rows: Any) -> list[Any]:
        """Rows (list, 2-D array, DataFrame or list of dicts) → predictions."""
        outputs: list[Any] = self.call("predict", {"inputs": _rows(rows)})["outputs"]
        return outputs

    def update(self, **changes: Any) -> Deployment:
        """Change any field of the spec: ``model`` (rolling update), ``traffic`` (a canary, e.g.
        ``traffic={"3": 90, "4": 10}``), scaling, batching, ``env``, ``secrets``, ``gpus``, ``memory``..."""
        self._out = DeploymentOut.model_validate(
            self._client._transport.json("PATCH", f"/api/v1/deployments/{self.name}", json=changes)
        )
        return self

    def scale(self, min_replicas: int | None = None, max_replicas: int | None = None) -> Deployment:
        return self.update(
            **{
                k: v
                for k, v in (("min_replicas", min_replicas), ("max_replicas", max_replicas))
                if v is not None
            }
        )

    def promote(self, version: int | None = None) -> Deployment:
        """End a canary by serving ``version`` (default: the canary) alone; no failed request."""
        body = {"version": version} if version is not None else {}
        self._out = DeploymentOut.model_validate(
            self._client._transport.json("POST", f"/api/v1/deployments/{self.name}/promote", json=body)
        )
        return self

    def rollback(self) -> Deployment:
        """End a canary: the version ``model`` names takes every request again; no failed request."""
        self._out = DeploymentOut.model_validate(
            self._client._transport.json("POST", f"/api/v1/deployments/{self.name}/rollback", json={})
        )
        return self

    def metrics(self) -> dict[str, Any]:
        """Per version served: weight and share, replicas, and the gateway's request count, errors
        and p50/p99 latency (``window``: the last 60 s). See ``GET /deployments/{name}/metrics``."""
        out: dict[str, Any] = self._client._transport.json("GET", f"/api/v1/deployments/{self.name}/metrics")
        return out

    def create_token(self, name: str) -> TokenCreated:
        """A token that can call only this endpoint."""
        out = self._client._transport.json(
            "POST", f"/api/v1/deployments/{self.name}/tokens", json={"name": name}
        )
        return TokenCreated.model_validate(out)

    def logs(self, lines: int = 200, replica: str | None = None) -> dict[str, str]:
        """The last ``lines`` lines of each replica's log (stdout and stderr), by replica id, newest
        replica first; ``replica`` picks one."""
        params: dict[str, Any] = {"lines": lines}
        if replica is not None:
            params["replica"] = replica
        return {row["replica"]: row["log"] for row in self._log_rows(params)}

    def iter_logs(
        self, follow: bool = True, lines: int = 200, poll_s: float = 1.0
    ) -> Iterator[tuple[str, str]]:
        """``(replica id, text)`` pieces of whole lines: the last ``lines`` lines of each replica's
        log, then, with ``follow``, what every replica writes from then on (new replicas from their
        first line), until the caller stops iterating."""
        ends: dict[str, int] = {}
        for row in self._log_rows({"lines": lines}):
            ends[row["replica"]] = row["end"]
            if row["log"]:
                yield row["replica"], row["log"] + "\n"
        while follow:
            time.sleep(poll_s)
            for r in self.refresh().info.replicas:
                try:
                    (row,) = self._log_rows({"replica": r.id, "offset": ends.get(r.id, 0)})
                except NotFoundError:  # removed since the refresh
                    continue
                ends[r.id] = row["end"]
                if row["log"]:
                    yield r.id, row["log"]

    def _log_rows(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = self._client._transport.json(
            "GET", f"/api/v1/deployments/{self.name}/logs", params=params
        )
        return rows

    def delete(self) -> None:
        self._client._transport.request("DELETE", f"/api/v1/deployments/{self.name}")


class DeploymentsAPI:
    """``client.deployments``."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def create(
        self,
        name: str,
        model: str | None = None,
        service: str | os.PathLike[str] | None = None,
        entrypoint: str | None = None,
        **spec: Any,
    ) -> Deployment:
        """Serve ``model`` (``name``, ``name:3``, ``name@production``: it follows the alias when
        it moves, unless ``track_alias=False``) or your own code: ``service``
        is a file or folder and ``entrypoint`` its ``file.py:ClassName``. ``spec`` takes
        ``min_replicas``, ``max_replicas``, ``target_inflight``, ``max_batch_size``, ``max_wait_ms``,
        ``idle_timeout_s``, ``cache_bytes``, ``timeout_s``, ``cpus``, ``batch_workers`` (batches a replica
        runs at once, its ``cpus`` split among them; docs/serving.md), ``env`` (variables of each
        replica), ``secrets`` (names of workspace secrets, injected as variables), ``gpus``,
        ``memory`` (MiB or ``"2Gi"``: the sandbox's ``limits.memory_mb``), ``limits`` (``memory_mb``,
        ``cpu_seconds``, ``processes``, ``open_files`` of each replica's sandbox), ``runtime``
        (``auto``, ``torch``, ``onnxruntime``, ``numpy``: what runs the model; docs/serving.md,
        "Runtimes"), ``placement`` (``{"edge": {"site": "shop1"}}``: one replica on each edge node
        with those labels instead of here; docs/edge.md), ``runtime_env`` (``{"requirements": [...]}``:
        packages installed for each replica before it starts; ``requirements=[...]`` and
        ``requirements_file=`` are shorthands; docs/runtime-envs.md). An unknown key is a 422 naming it.
        A name that exists already is a 409: see :meth:`apply`."""
        body = {"name": name, **self._spec(model, service, entrypoint, spec)}
        out = self._client._transport.json("POST", "/api/v1/deployments", json=body)
        return Deployment(self._client, DeploymentOut.model_validate(out))

    def apply(
        self,
        name: str,
        model: str | None = None,
        service: str | os.PathLike[str] | None = None,
        entrypoint: str | None = None,
        **spec: Any,
    ) -> Deployment:
        """Create deployment ``name`` or update it to match exactly this spec (the arguments of
        :meth:`create`; what is left out takes its default). The same spec twice changes nothing; a
        new model, code or replica setting rolls the replicas over, scaling alone keeps them."""
        body = self._spec(model, service, entrypoint, spec)
        out = self._client._transport.json("PUT", f"/api/v1/deployments/{name}", json=body)
        return Deployment(self._client, DeploymentOut.model_validate(out))

    def _spec(
        self,
        model: str | None,
        service: str | os.PathLike[str] | None,
        entrypoint: str | None,
        spec: dict[str, Any],
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"model": model, **spec}
        requirements, requirements_file = body.pop("requirements", None), body.pop("requirements_file", None)
        if body.get("runtime_env") is not None or requirements or requirements_file:
            from aicloud.schemas.runtime_env import expand_runtime_env

            body["runtime_env"] = expand_runtime_env(body.get("runtime_env"), requirements, requirements_file)
        if service is not None:
            from aicloud.client._specs import pack_code

            if entrypoint is None:
                raise ValueError("give entrypoint='file.py:ClassName' with service=")
            digest = self._client.blobs.upload(pack_code(service), "application/gzip")
            body["service"] = {"code": digest, "entrypoint": entrypoint}
        return body

    def get(self, name: str) -> Deployment:
        out = self._client._transport.json("GET", f"/api/v1/deployments/{name}")
        return Deployment(self._client, DeploymentOut.model_validate(out))

    def list(self, *, offset: int = 0, limit: int = 100) -> list[Deployment]:
        """Deployments, newest first: ``limit`` (up to 1,000) after ``offset``."""
        params = {"offset": offset, "limit": limit}
        return [
            Deployment(self._client, DeploymentOut.model_validate(d))
            for d in self._client._transport.json("GET", "/api/v1/deployments", params=params)
        ]
