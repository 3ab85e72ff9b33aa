"""Settings: the one reader of ``AICLOUD_*`` environment variables.

Every field is documented in ``docs/settings.md``; a test fails when one is not.
"""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_PORT = 8420


def _default_home() -> Path:
    return Path(os.path.expanduser("~")) / ".aicloud"


class Settings(BaseSettings):
    """Control-plane and client settings, read from the environment with the ``AICLOUD_`` prefix."""

    model_config = SettingsConfigDict(env_prefix="AICLOUD_", extra="ignore")

    home: Path = Field(
        default_factory=_default_home, description="Folder for the database, blobs, keys, logs."
    )
    host: str = Field(default="127.0.0.1", description="Address the control plane listens on.")
    port: int = Field(default=DEFAULT_PORT, description="Port the control plane listens on.")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL of the metadata store; default SQLite under home."
    )
    blob_url: str | None = Field(
        default=None, description="Blob store URL; default file:// folder under home."
    )
    master_key: str | None = Field(
        default=None,
        description="Base64 master key (32 bytes); overrides home/master.key. Never logged.",
        repr=False,
    )
    max_upload_bytes: int = Field(
        default=10 * 1024**3, description="Largest accepted upload in bytes; bigger bodies get 413."
    )
    parse_max_memory_bytes: int = Field(
        default=4 * 1024**3,
        ge=256 * 1024**2,
        description="Parser worker: address space (RLIMIT_AS) of the process that parses uploaded files.",
    )
    parse_max_cpu_seconds: float = Field(
        default=600.0, gt=0, description="Parser worker: CPU seconds (all threads) for parsing one file."
    )
    parse_timeout_seconds: float = Field(
        default=900.0, gt=0, description="Parser worker: wall-clock seconds for parsing one upload or split."
    )
    parse_max_depth: int = Field(
        default=64, ge=1, description="Deepest nesting of arrays and objects on a JSON Lines line."
    )
    parse_max_expanded_bytes: int = Field(
        default=32 * 1024**3, ge=1, description="Most bytes a compressed file (NPZ, Parquet) may expand to."
    )
    parse_max_expansion_ratio: float = Field(
        default=100.0, gt=1, description="Most a compressed file may expand (unpacked/stored) past 64 MiB."
    )
    url: str | None = Field(default=None, description="Client: control-plane URL (SDK and CLI).")
    token: str | None = Field(default=None, description="Client: bearer token (SDK and CLI).", repr=False)
    log_level: str = Field(default="info", description="Server log level.")
    max_concurrent_jobs: int = Field(
        default_factory=lambda: os.cpu_count() or 1, ge=1, description="Jobs running at once; the rest queue."
    )
    cancel_grace_seconds: float = Field(
        default=10.0, ge=0, description="Seconds between SIGTERM and SIGKILL when a job is cancelled."
    )
    max_log_bytes: int = Field(
        default=50 * 1024 * 1024, ge=1024, description="Cap on a job's kept log; the excess is dropped."
    )
    executor: str = Field(
        default="local", description="Where jobs run: local (subprocesses) or ray (AICLOUD_RAY_ADDRESS)."
    )
    isolation: Literal["sandbox", "none"] = Field(
        default="sandbox",
        description="How workloads (jobs, trials, replicas) run: sandbox (bubblewrap: own namespaces, "
        "read-only system, no view of the home folder, an unprivileged uid) or none (as the control "
        "plane's user, trusted: only on a single-user machine).",
    )
    warm_template: bool = Field(
        default=True,
        description="Start serving replicas by forking a warm template process that has already "
        "imported the serving stack (and torch for replicas that need it), in the workload sandbox; "
        "false: every replica starts a new interpreter.",
    )
    jobs_dir: Path | None = Field(
        default=None, description="Folder for job logs and handles; default home/jobs."
    )
    envs_dir: Path | None = Field(
        default=None,
        description="Folder of the runtime-env cache (one subfolder per workspace); default home/envs.",
    )
    env_build_timeout_s: float = Field(
        default=900.0, gt=0, description="Runtime envs: wall-clock seconds for one pip install of a spec."
    )
    env_max_mb: int = Field(
        default=4096, ge=1, description="Runtime envs: largest built env (MB); bigger fails the workload."
    )
    env_max_age_days: float = Field(
        default=14.0, gt=0, description="Runtime envs: an environment unused this long is removed (hourly)."
    )
    ray_address: str | None = Field(
        default=None, description="Ray executor: the Ray head's GCS address, host:port."
    )
    ray_token: str | None = Field(
        default=None,
        description="Ray executor: the cluster's token (RAY_AUTH_TOKEN) for its token auth. Never logged.",
        repr=False,
    )
    ray_namespace: str = Field(
        default="aicloud", min_length=1, description="Ray executor: the namespace of the jobs' actors."
    )
    ray_placement_strategy: str = Field(
        default="PACK",
        pattern="^(PACK|SPREAD|STRICT_PACK|STRICT_SPREAD)$",
        description="Ray executor: placement group strategy of multi-worker jobs.",
    )
    ray_start_timeout_seconds: float = Field(
        default=60.0, gt=0, description="Ray executor: how long a job may wait for its workers to be placed."
    )
    gateway_channel: bool = Field(
        default=True,
        description="Gateway: send buffered endpoint requests to replicas over one multiplexed channel "
        "per replica (false: one HTTP/1.1 request per call).",
    )
    edge_offline_after_s: float = Field(
        default=30.0,
        gt=0,
        le=86_400,
        description="An edge node whose last call is older than this is offline: the gateway stops "
        "routing to its replicas.",
    )
    auth_cache_seconds: float = Field(
        default=5.0,
        ge=0,
        description="How long a verified token is trusted without a database read; 0 disables.",
    )
    public_api_docs: bool = Field(
        default=False,
        description="Serve /docs, /redoc and /openapi.json without a token (by default they need one).",
    )
    public_url: str | None = Field(
        default=None,
        pattern=r"^https?://[^\s/?#]+(/[^\s?#]*)?$",
        description="The control plane's URL as clients reach it (deployment URLs); default "
        "http://host:port (127.0.0.1 for a wildcard host).",
    )
    price_cpu_hour: float = Field(
        default=0.0, ge=0, allow_inf_nan=False, description="Usage: price of one CPU core for one hour."
    )
    price_gpu_hour: float = Field(
        default=0.0, ge=0, allow_inf_nan=False, description="Usage: price of one GPU for one hour."
    )
    price_gb_hour: float = Field(
        default=0.0,
        ge=0,
        allow_inf_nan=False,
        description="Usage: price of one GiB of peak memory for one hour.",
    )
    price_gb_month: float = Field(
        default=0.0,
        ge=0,
        allow_inf_nan=False,
        description="Usage: price of one GiB of blobs held (datasets, models, code) for 30 days.",
    )
    currency: str = Field(
        default="USD", min_length=1, max_length=16, description="Usage: the currency of the prices."
    )
    alerts_interval_s: float = Field(
        default=15.0,
        gt=0,
        allow_inf_nan=False,
        description="Alerts: seconds between evaluations of the rules.",
    )

    @cached_property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.home / 'aicloud.db'}"

    @cached_property
    def resolved_blob_url(self) -> str:
        if self.blob_url:
            return self.blob_url
        return f"file://{self.home / 'blobs'}"

    @property
    def resolved_jobs_dir(self) -> Path:
        return self.jobs_dir or self.home / "jobs"

    @property
    def resolved_envs_dir(self) -> Path:
        return self.envs_dir or self.home / "envs"

    @property
    def credentials_path(self) -> Path:
        return self.home / "credentials"

    @property
    def pid_path(self) -> Path:
        return self.home / "server.pid"

    @property
    def log_path(self) -> Path:
        return self.home / "server.log"

    @property
    def server_url(self) -> str:
        return self.url or f"http://{self.host}:{self.port}"

    @property
    def resolved_public_url(self) -> str:
        """Where clients reach this control plane: ``public_url``, else the bound address (never a
        request's ``Host`` header, which the caller chooses)."""
        if self.public_url:
            return self.public_url.rstrip("/")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "", "*") else "::1" if self.host == "::" else self.host
        return f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"


def get_settings() -> Settings:
    return Settings()
