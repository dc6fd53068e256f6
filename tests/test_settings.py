"""Settings: defaults, TOML file, environment, flags, in that order; bad values refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.settings import Settings, SettingsError


def test_precedence_file_then_environment_then_flags(tmp_path: Path) -> None:
    cfg = tmp_path / "orc.toml"
    cfg.write_text(
        'topo_root = "/prod"\nlisten_port = 9000\nwebhook_urls = ["http://a", "http://b"]\n'
    )
    s = Settings.load(
        config_file=cfg,
        environ={"ORC_LISTEN_PORT": "9100", "ORC_DISABLE_ACTIVE_REPARENTS": "yes",
                 "ORC_ETCD_ENDPOINTS": "10.0.0.1:2379, 10.0.0.2:2379"},
        overrides={"listen_port": 9200, "instance_id": None},
    )  # fmt: skip
    assert s.topo_root == "/prod"
    assert s.listen_port == 9200
    assert s.disable_active_reparents is True
    assert s.etcd_endpoints == ("10.0.0.1:2379", "10.0.0.2:2379")
    assert s.webhook_urls == ("http://a", "http://b")
    assert s.workflow_settings().disable_active_reparents is True


def test_secrets_are_not_in_repr() -> None:
    s = Settings(mysql_password="hunter2", api_token="tok", webhook_secret="sec")
    assert "hunter2" not in repr(s) and "tok" not in repr(s) and "sec" not in repr(s)
    assert "hunter2" not in repr(s.credentials)


@pytest.mark.parametrize(
    "environ, message",
    [
        ({"ORC_LISTEN_PORT": "http"}, "listen_port"),
        ({"ORC_DISABLE_ACTIVE_REPARENTS": "maybe"}, "not a boolean"),
        ({"ORC_LISTEN_PORT": "70000"}, "bad listen port"),
        ({"ORC_LOCK_TTL_S": "0"}, "TTL"),
    ],
)
def test_bad_values_are_refused(environ: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.load(environ=environ)


def test_unknown_key_in_file_is_refused(tmp_path: Path) -> None:
    cfg = tmp_path / "orc.toml"
    cfg.write_text("colour = 'blue'\n")
    with pytest.raises(SettingsError, match="unknown setting"):
        Settings.load(config_file=cfg, environ={})
