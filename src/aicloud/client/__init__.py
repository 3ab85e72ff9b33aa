"""The Python SDK: ``from aicloud import Client``."""

from __future__ import annotations

from types import TracebackType

from aicloud.client.alerts import AlertsAPI
from aicloud.client.blobs import BlobsAPI
from aicloud.client.datasets import DatasetsAPI, DatasetVersion
from aicloud.client.deployments import Deployment, DeploymentsAPI
from aicloud.client.edge import EdgeAPI
from aicloud.client.embeddings import EmbeddingsAPI
from aicloud.client.http import Transport, resolve
from aicloud.client.jobs import Job, JobsAPI
from aicloud.client.models import ModelsAPI
from aicloud.client.monitoring import MonitoringAPI
from aicloud.client.resources import AdminAPI, SecretsAPI, TokensAPI, WorkspacesAPI
from aicloud.client.runs import RunsAPI
from aicloud.client.usage import Bound, UsageReport, get_usage
from aicloud.client.zoo import ZooAPI

__all__ = ["Client", "DatasetVersion", "Deployment", "Job"]


class Client:
    """A connection to an aicloud control plane.

    ``url`` and ``token`` come from the arguments, else ``AICLOUD_URL`` / ``AICLOUD_TOKEN``,
    else ``$AICLOUD_HOME/credentials`` (written by the server's first start or ``aicloud login``).
    Errors the server sends are raised as the same typed exceptions (``aicloud.errors``).
    A ready ``transport`` (e.g. a workload's, with its retry policy) replaces all three.
    """

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        timeout: float = 60.0,
        *,
        transport: Transport | None = None,
    ) -> None:
        if transport is None:
            resolved_url, resolved_token = resolve(url, token)
            transport = Transport(resolved_url, resolved_token, timeout=timeout)
        self._transport = transport
        self.blobs = BlobsAPI(self._transport)
        self.datasets = DatasetsAPI(self._transport)
        self.secrets = SecretsAPI(self._transport)
        self.tokens = TokensAPI(self._transport)
        self.workspaces = WorkspacesAPI(self._transport)
        self.admin = AdminAPI(self._transport)
        self.jobs = JobsAPI(self)
        self.runs = RunsAPI(self)
        self.models = ModelsAPI(self)
        self.deployments = DeploymentsAPI(self)
        self.edge = EdgeAPI(self._transport)
        self.zoo = ZooAPI(self._transport)
        self.embeddings = EmbeddingsAPI(self._transport)
        self.monitoring = MonitoringAPI(self._transport)
        self.alerts = AlertsAPI(self._transport)

    @property
    def url(self) -> str:
        return self._transport.url

    def usage(self, by: str = "job", since: Bound = None, until: Bound = None) -> UsageReport:
        """CPU-, GPU- and GB-hours and cost of the jobs that ended in ``[since, until)``, grouped
        ``by`` ``job``, ``user`` or ``day``, with ``.total`` (see docs/usage.md)."""
        return get_usage(self._transport, by, since, until)

    def health(self) -> dict[str, str]:
        result: dict[str, str] = self._transport.json("GET", "/healthz")
        return result

    def close(self) -> None:
        self._transport.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
