"""Service settings: defaults, then a TOML file (`--config`), then environment variables
(`ORC_*`), then command-line flags. Credentials live here, never in etcd.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from migration.context import Credentials as MigrationCredentials
from workflows.env import MysqlCredentials, WorkflowSettings


class SettingsError(ValueError):
    """A setting has a value that can never work."""


@dataclass(frozen=True)
class Settings:
    etcd_endpoints: tuple[str, ...] = ("127.0.0.1:2379",)
    topo_root: str = "/vt"
    listen_host: str = "127.0.0.1"
    listen_port: int = 8080
    instance_id: str = ""
    mysql_user: str = "orc"
    mysql_password: str = field(default="", repr=False)
    mysql_connect_timeout_s: float = 1.0
    mysql_query_timeout_s: float = 5.0
    # Commands (POST) need `Authorization: Bearer <token>` when set; reads stay open.
    api_token: str = field(default="", repr=False)
    # HMAC-SHA256 secret for webhooks in and out; inbound webhooks are refused when empty.
    webhook_secret: str = field(default="", repr=False)
    webhook_urls: tuple[str, ...] = ()
    webhook_max_age_s: float = 300.0
    disable_active_reparents: bool = False
    lock_ttl_s: int = 10
    lock_timeout_s: float = 30.0
    election_ttl_s: int = 5
    health_interval_s: float = 1.0
    health_timeout_s: float = 0.8
    health_concurrency: int = 200
    # A large fleet's checks are spread over this fraction of the interval, shard by shard
    # (`orchestrator.health.checker.pacing_window`), instead of all starting at once.
    health_spread: float = 0.8
    # Divide the shards among the live instances (each checks and recovers its own share,
    # `orchestrator.health.ownership`); off: every instance checks every tablet and only the
    # leader recovers.
    health_share_shards: bool = True
    # Event-driven failure detection (orchestrator.health.primary_watch): one connection per
    # shard primary, held by a sleeping query; losing it (a crashed mysqld closes its sockets)
    # checks that shard at once instead of at the next cycle. Replicas still confirm.
    health_event_detection: bool = True
    # A tablet failing this many checks in a row becomes `spare` (and returns when healthy).
    unhealthy_checks_to_spare: int = 3
    recovery_block_s: float = 30.0
    # A replica more than this many seconds behind its primary is reported (ReplicaLagging).
    replica_lag_threshold_s: float = 30.0
    recoveries_enabled: bool = True
    # Migration: run a worker inside `orchestrator serve` (one machine needs nothing more);
    # its name defaults to the instance id. Worker leases expire after this many seconds.
    worker_enabled: bool = True
    worker_name: str = ""
    worker_lease_ttl_s: int = 3
    # A sharding DDL lock older than this raises a `ddl_lock.waiting` event (once per lock).
    ddl_lock_alert_s: float = 300.0
    log_json: bool = True
    log_level: str = "info"

    def __post_init__(self) -> None:
        if not self.etcd_endpoints:
            raise SettingsError("at least one etcd endpoint is required")
        if not 0 <= self.listen_port < 65536:  # 0: any free port (tests)
            raise SettingsError(f"bad listen port {self.listen_port}")
        if self.health_timeout_s >= self.health_interval_s * 2:
            raise SettingsError("health_timeout_s must be well under the health interval")
        if not 0.0 <= self.health_spread < 1.0:
            raise SettingsError("health_spread must be a fraction of the interval, 0 to below 1")
        if self.lock_ttl_s < 1 or self.election_ttl_s < 1 or self.worker_lease_ttl_s < 1:
            raise SettingsError("lease TTLs must be at least 1 second")

    @property
    def credentials(self) -> MysqlCredentials:
        return MysqlCredentials(
            user=self.mysql_user,
            password=self.mysql_password,
            connect_timeout=self.mysql_connect_timeout_s,
            query_timeout=self.mysql_query_timeout_s,
        )

    @property
    def migration_credentials(self) -> MigrationCredentials:
        """The same MySQL account, with the longer statement deadline bulk copies need."""
        return MigrationCredentials(
            user=self.mysql_user,
            password=self.mysql_password,
            connect_timeout=max(self.mysql_connect_timeout_s, 2.0),
        )

    def workflow_settings(self) -> WorkflowSettings:
        return WorkflowSettings(
            disable_active_reparents=self.disable_active_reparents,
            lock_timeout=self.lock_timeout_s,
        )

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    @classmethod
    def load(
        cls,
        *,
        config_file: Path | None = None,
        environ: dict[str, str] | None = None,
        overrides: dict[str, Any] | None = None,
    ) -> Settings:
        values: dict[str, Any] = {}
        if config_file is not None:
            try:
                values.update(tomllib.loads(config_file.read_text()))
            except (OSError, tomllib.TOMLDecodeError) as e:
                raise SettingsError(f"cannot read config {config_file}: {e}") from e
        env = os.environ if environ is None else environ
        for f in dataclasses.fields(cls):
            key = f"ORC_{f.name.upper()}"
            if key in env:
                values[f.name] = env[key]
        values.update({k: v for k, v in (overrides or {}).items() if v is not None})
        return cls(**{k: _coerce(k, v) for k, v in values.items()})


def _coerce(name: str, value: Any) -> Any:
    fields = {f.name: f for f in dataclasses.fields(Settings)}
    if name not in fields:
        raise SettingsError(f"unknown setting {name!r}")
    default = fields[name].default
    if isinstance(default, tuple) and isinstance(value, str):
        return tuple(v.strip() for v in value.split(",") if v.strip())
    if isinstance(default, tuple) and isinstance(value, list):
        return tuple(str(v) for v in value)
    if isinstance(default, bool):
        if isinstance(value, str):
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off", ""):
                return False
            raise SettingsError(f"{name}: not a boolean: {value!r}")
        return bool(value)
    try:
        if isinstance(default, int):
            return int(value)
        if isinstance(default, float):
            return float(value)
    except (TypeError, ValueError) as e:
        raise SettingsError(f"{name}: {e}") from e
    return value
