"""deploy/systemd: the units parse and say what the README promises (no systemd runs here:
these are consistency checks; the ansible test runs the same commands in process mode)."""

from __future__ import annotations

import configparser
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.settings import Settings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
UNITS = {"orchestrator@.service": "serve", "orchestrator-worker@.service": "worker"}


def unit(name: str) -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string((DEPLOY / "systemd" / name).read_text())
    return parser


@pytest.mark.parametrize("name", sorted(UNITS))
def test_unit_restarts_on_failure_and_stops_with_sigterm(name: str) -> None:
    u = unit(name)
    service = u["Service"]
    assert service["Restart"] == "on-failure"
    assert service["KillSignal"] == "SIGTERM"
    assert int(service["TimeoutStopSec"]) >= 10
    # Bad settings exit 2 (serve and worker): restarting would only loop.
    assert service["RestartPreventExitStatus"] == "2"
    assert service["EnvironmentFile"].startswith("/etc/orchestrator/")
    exec_start = service["ExecStart"].split()
    assert exec_start[0].endswith("/orchestrator") and exec_start[1] == UNITS[name]
    if UNITS[name] == "worker":
        assert exec_start[2:] == ["--name", "%i"]
    assert u["Install"]["WantedBy"] == "multi-user.target"


def test_environment_names_are_settings() -> None:
    """Every ORC_* the units or the ansible settings template set is a real setting."""
    known = {f"ORC_{name.upper()}" for name in Settings.__dataclass_fields__}
    texts = [(DEPLOY / "systemd" / n).read_text() for n in UNITS]
    texts.append((DEPLOY / "ansible/roles/orchestrator/templates/orchestrator.env.j2").read_text())
    used = {m for t in texts for m in re.findall(r"\b(ORC_[A-Z_]+)=", t)}
    assert used and used <= known, sorted(used - known)


ANSIBLE = DEPLOY / "ansible"
PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"
PLAYBOOKS = ("deploy", "start", "stop", "rolling_update", "scale_out", "scale_in")


def _ansible(tmp_path: Path, *args: str) -> str:
    env = {**os.environ, "ANSIBLE_CONFIG": str(ANSIBLE / "ansible.cfg"),
           # ansible refuses a locale that is not UTF-8 (LC_ALL=C in some CI shells)
           "LC_ALL": "C.UTF-8",
           "ANSIBLE_HOME": str(tmp_path), "ANSIBLE_LOCAL_TEMP": str(tmp_path)}  # fmt: skip
    r = subprocess.run([str(PLAYBOOK), *args], cwd=ANSIBLE, env=env, capture_output=True,
                       text=True, timeout=120)  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


@pytest.mark.skipif(not PLAYBOOK.exists(), reason="ansible-core not installed")
def test_playbooks_parse_and_carry_the_component_tags(tmp_path: Path) -> None:
    for name in PLAYBOOKS:
        _ansible(tmp_path, "--syntax-check", f"{name}.yml")
    for name in ("deploy", "start", "stop", "rolling_update"):
        tags = _ansible(tmp_path, "--list-tags", f"{name}.yml")
        assert "master" in tags and "worker" in tags, (name, tags)
    for name in ("rolling_update", "scale_in"):
        text = (ANSIBLE / f"{name}.yml").read_text()
        assert "serial: 1" in text and "any_errors_fatal: true" in text


def test_inventory_has_the_seed_groups() -> None:
    text = (ANSIBLE / "inventory.ini").read_text()
    for group in ("[orchestrator_servers]", "[worker_servers]", "[all:vars]"):
        assert group in text
