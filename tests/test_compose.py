"""The Docker Compose deployment (compose/) parses and is consistent with itself.

No Docker engine runs in the test environment, so nothing here starts a container: these tests
read docker-compose.yml, the MariaDB option files, the bootstrap script and .env.example, and check
that they agree (server ids, GTID options, variables, dependencies, published ports, file paths).
"""

from __future__ import annotations

import configparser
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

COMPOSE_DIR = Path(__file__).resolve().parent.parent / "compose"
COMPOSE_FILE = COMPOSE_DIR / "docker-compose.yml"
ENV_EXAMPLE = COMPOSE_DIR / ".env.example"
BOOTSTRAP = COMPOSE_DIR / "bootstrap.sh"

MARIADB_SERVICES = ("mariadb1", "mariadb2", "mariadb3")
REQUIRED_SERVICES = ("etcd", *MARIADB_SERVICES, "orchestrator", "bootstrap", "worker", "target")
TASKS_DIR = COMPOSE_DIR / "tasks"

# Where the mariadb image reads option files, and the groups mariadbd reads from them.
MARIADB_CONF_DIRS = ("/etc/mysql/conf.d", "/etc/mysql/mariadb.conf.d")
MARIADB_GROUPS = ("mysqld", "server", "mariadb", "mariadbd", "mariadb-10.11")

# Options every MariaDB server must have (values normalised by _normalise).
REQUIRED_MARIADB_OPTIONS = {
    "log_bin": "1",
    "log_slave_updates": "1",
    "binlog_format": "ROW",
    "gtid_strict_mode": "1",
    "skip_slave_start": "1",
    "read_only": "1",
    "sync_binlog": "1",
    "innodb_flush_log_at_trx_commit": "1",
    # What a migration task's binlog reader needs (docs: Data migration).
    "binlog_row_image": "FULL",
    "binlog_row_metadata": "FULL",
}

# ${VAR}, ${VAR:-default}, ${VAR:?message}, $VAR; `$$` is a literal dollar.
VARIABLE = re.compile(r"(?<!\$)\$(?:\{([A-Za-z_][A-Za-z0-9_]*)[^}]*\}|([A-Za-z_][A-Za-z0-9_]*))")
BOOTSTRAP_COMMANDS = ("CreateKeyspace", "CreateShard", "AddTablet", "InitShardPrimary")
SECRET_NAME = re.compile(r"PASSWORD|TOKEN|SECRET", re.IGNORECASE)


# -- loading ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    with COMPOSE_FILE.open() as f:
        data = yaml.safe_load(f)
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    services = compose["services"]
    assert isinstance(services, dict)
    return services


@pytest.fixture(scope="module")
def env_example() -> dict[str, str]:
    values = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        assert sep, f".env.example: not NAME=value: {line!r}"
        values[name.strip()] = value.strip()
    return values


def _command(service: dict[str, Any]) -> list[str]:
    command = service.get("command", [])
    return shlex.split(command) if isinstance(command, str) else [str(c) for c in command]


def _flag(args: list[str], name: str) -> str | None:
    """The value of ``--name value`` or ``--name=value`` in ``args``, or None."""
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def _bind_mounts(service: dict[str, Any]) -> list[tuple[Path, str]]:
    """(host path, container path) of each bind mount; named volumes are left out."""
    mounts = []
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            if volume.get("type") != "bind":
                continue
            source, target = volume["source"], volume["target"]
        else:
            source, target = volume.split(":")[:2]
        if source.startswith((".", "/")):
            mounts.append(((COMPOSE_DIR / source).resolve(), target))
    return mounts


def _named_volumes(service: dict[str, Any]) -> list[str]:
    names = []
    for volume in service.get("volumes", []):
        source = volume.get("source", "") if isinstance(volume, dict) else volume.split(":")[0]
        if source and not source.startswith((".", "/", "~")):
            names.append(source)
    return names


def _normalise(name: str, value: str | None) -> tuple[str, str]:
    name = name.strip().replace("-", "_").lower()
    value = "1" if value is None else value.strip().strip("\"'")
    if value.upper() in ("ON", "TRUE", "YES", "1"):
        value = "1"
    elif value.upper() in ("OFF", "FALSE", "NO", "0"):
        value = "0"
    if name == "log_bin" and value != "0":
        value = "1"  # log_bin = <basename> turns the binary log on
    return name, value


def _mariadb_options(service: dict[str, Any]) -> dict[str, str]:
    """The server options of one MariaDB service: its mounted option files, then its command
    line (which wins, as in mariadbd)."""
    options: dict[str, str] = {}
    for host, target in _bind_mounts(service):
        files: list[Path] = []
        if target.rstrip("/") in MARIADB_CONF_DIRS and host.is_dir():
            files = sorted(host.glob("*.cnf"))
        elif target.rsplit("/", 1)[0] in MARIADB_CONF_DIRS and target.endswith(".cnf"):
            files = [host]
        for path in files:
            parser = configparser.ConfigParser(
                allow_no_value=True, strict=False, interpolation=None, comment_prefixes=("#", ";")
            )
            parser.optionxform = str  # type: ignore[assignment,method-assign]
            parser.read_string(path.read_text())
            for group in MARIADB_GROUPS:
                if parser.has_section(group):
                    for name, value in parser.items(group):
                        key, val = _normalise(name, value)
                        options[key] = val
    for arg in _command(service):
        if arg.startswith("--"):
            name, sep, value = arg[2:].partition("=")
            key, val = _normalise(name, value if sep else None)
            options[key] = val
    return options


# -- the file as a whole ---------------------------------------------------------------------


def test_compose_file_parses_and_has_the_services(services: dict[str, dict[str, Any]]) -> None:
    for name in REQUIRED_SERVICES:
        assert name in services, f"service {name} missing"
        assert isinstance(services[name], dict)


def test_every_variable_used_is_defined_in_env_example(env_example: dict[str, str]) -> None:
    text = COMPOSE_FILE.read_text()
    used = {m.group(1) or m.group(2) for m in VARIABLE.finditer(text)}
    assert used, "docker-compose.yml takes no settings from .env?"
    missing = used - env_example.keys()
    assert not missing, f"used in docker-compose.yml but not in .env.example: {sorted(missing)}"
    empty = [name for name in used if not env_example[name]]
    assert not empty, f".env.example leaves these empty: {empty}"


def test_secrets_are_only_variable_references(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        environment = service.get("environment", {})
        if isinstance(environment, list):
            environment = dict(item.partition("=")[::2] for item in environment)
        for key, value in environment.items():
            if SECRET_NAME.search(key):
                assert re.fullmatch(r"\$\{[A-Za-z_][A-Za-z0-9_]*:\?[^}]*\}", str(value)), (
                    f"{name}: {key} must be a required ${{VAR:?}} reference, not {value!r}"
                )


def test_depends_on_names_existing_services_with_healthchecks(
    services: dict[str, dict[str, Any]],
) -> None:
    for name, service in services.items():
        depends_on = service.get("depends_on", {})
        if isinstance(depends_on, list):
            depends_on = {dep: {"condition": "service_started"} for dep in depends_on}
        for dep, spec in depends_on.items():
            assert dep in services, f"{name} depends on unknown service {dep}"
            if spec.get("condition") == "service_healthy":
                assert "healthcheck" in services[dep], f"{name} waits for {dep} to be healthy"


def test_orchestrator_waits_for_etcd_and_every_mariadb(
    services: dict[str, dict[str, Any]],
) -> None:
    depends_on = services["orchestrator"]["depends_on"]
    for dep in ("etcd", *MARIADB_SERVICES):
        assert depends_on[dep]["condition"] == "service_healthy"
    assert services["bootstrap"]["depends_on"]["orchestrator"]["condition"] == "service_healthy"


def test_published_ports_bind_loopback_only(services: dict[str, dict[str, Any]]) -> None:
    published = 0
    for name, service in services.items():
        for port in service.get("ports", []):
            published += 1
            if isinstance(port, dict):
                host_ip = port.get("host_ip")
            else:
                parts = str(port).split(":")
                host_ip = ":".join(parts[:-2]) if len(parts) >= 3 else None
            assert host_ip == "127.0.0.1", f"{name}: port {port!r} is not bound to 127.0.0.1"
    assert published, "the orchestrator's API should be published on loopback"
    assert any(
        str(p).startswith("127.0.0.1:") and str(p).endswith(":8080")
        for p in services["orchestrator"].get("ports", [])
    )


def test_referenced_files_and_named_volumes_exist(compose: dict[str, Any]) -> None:
    declared = set(compose.get("volumes") or {})
    for name, service in compose["services"].items():
        for host, _ in _bind_mounts(service):
            assert host.exists(), f"{name}: bind mount source {host} does not exist"
        for volume in _named_volumes(service):
            assert volume in declared, f"{name}: named volume {volume} not declared"
        build = service.get("build")
        if build is not None:
            context = (
                COMPOSE_DIR / (build if isinstance(build, str) else build["context"])
            ).resolve()
            assert context.is_dir(), f"{name}: build context {context} missing"
            dockerfile = (
                "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
            )
            assert (context / dockerfile).is_file(), f"{name}: {dockerfile} missing in {context}"
            assert (context / "pyproject.toml").is_file(), "build context must be the repo root"


def test_orchestrator_image_installs_the_repository() -> None:
    dockerfile = (COMPOSE_DIR / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", dockerfile, re.MULTILINE)
    assert re.search(r"pip install\b", dockerfile)
    ignore = COMPOSE_DIR / "Dockerfile.dockerignore"
    if ignore.exists():
        # An allow-list: every package the distribution installs must be let through.
        allowed = {
            line[1:].strip("/") for line in ignore.read_text().splitlines() if line[:1] == "!"
        }
        # Every package pyproject.toml installs (the worker needs migration/).
        assert {
            "pyproject.toml",
            "topo",
            "mysqlctl",
            "workflows",
            "migration",
            "orchestrator",
        } <= allowed


# -- etcd and the orchestrator ---------------------------------------------------------------


def _etcd_client_port(etcd: dict[str, Any]) -> int:
    args = _command(etcd)
    url = _flag(args, "--advertise-client-urls") or _flag(args, "--listen-client-urls")
    environment = etcd.get("environment") or {}
    url = url or environment.get("ETCD_ADVERTISE_CLIENT_URLS")
    assert url, "etcd: no client URL configured"
    port = urlsplit(url.split(",")[0]).port
    assert port is not None
    return port


def test_etcd_has_a_named_volume_and_a_healthcheck(services: dict[str, dict[str, Any]]) -> None:
    etcd = services["etcd"]
    assert re.match(r"(quay\.io/coreos|gcr\.io/etcd-development)/etcd:v3\.5\.", etcd["image"])
    assert _named_volumes(etcd), "etcd data must live in a named volume"
    data_dir = _flag(_command(etcd), "--data-dir")
    if data_dir:
        targets = [v.split(":")[1] for v in etcd["volumes"] if isinstance(v, str)]
        assert any(data_dir.startswith(t) for t in targets), "etcd --data-dir not on the volume"
    assert etcd["healthcheck"]["test"]
    assert _etcd_client_port(etcd) == 2379


def test_orchestrator_etcd_target_is_the_etcd_service(services: dict[str, dict[str, Any]]) -> None:
    args = _command(services["orchestrator"])
    assert args[:2] == ["orchestrator", "serve"]
    target = _flag(args, "--etcd")
    assert target, "orchestrator serve needs --etcd"
    host, _, port = target.removeprefix("http://").partition(":")
    assert host == "etcd" and host in services
    assert int(port) == _etcd_client_port(services["etcd"])
    listen = _flag(args, "--listen")
    assert listen == "0.0.0.0:8080"


def test_orchestrator_gets_its_settings_from_the_environment(
    services: dict[str, dict[str, Any]],
) -> None:
    environment = services["orchestrator"]["environment"]
    for name in ("ORC_MYSQL_USER", "ORC_MYSQL_PASSWORD", "ORC_API_TOKEN", "ORC_WEBHOOK_SECRET"):
        assert name in environment, f"orchestrator: {name} not set"
    # The MariaDB init script creates the user the orchestrator logs in as.
    for server in MARIADB_SERVICES:
        mariadb_env = services[server]["environment"]
        assert mariadb_env["ORC_MYSQL_USER"] == environment["ORC_MYSQL_USER"]
        assert mariadb_env["ORC_MYSQL_PASSWORD"] == environment["ORC_MYSQL_PASSWORD"]


def test_prometheus_is_optional_and_scrapes_the_orchestrator(
    services: dict[str, dict[str, Any]],
) -> None:
    prometheus = services.get("prometheus")
    if prometheus is None:
        pytest.skip("no prometheus service")
    assert "monitoring" in prometheus.get("profiles", [])
    config_file = next(
        host for host, target in _bind_mounts(prometheus) if target.endswith("prometheus.yml")
    )
    config = yaml.safe_load(config_file.read_text())
    targets = [
        target
        for job in config["scrape_configs"]
        for static in job.get("static_configs", [])
        for target in static["targets"]
    ]
    assert "orchestrator:8080" in targets
    paths = {job.get("metrics_path", "/metrics") for job in config["scrape_configs"]}
    assert "/metrics" in paths


# -- MariaDB ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", MARIADB_SERVICES)
def test_mariadb_has_gtid_replication_options(
    services: dict[str, dict[str, Any]], name: str
) -> None:
    service = services[name]
    assert service["image"].startswith("mariadb:10.11")
    options = _mariadb_options(service)
    for option, expected in REQUIRED_MARIADB_OPTIONS.items():
        assert options.get(option) == expected, (
            f"{name}: {option} is {options.get(option)!r}, expected {expected!r}"
        )


def test_mariadb_server_ids_are_distinct(services: dict[str, dict[str, Any]]) -> None:
    ids = {name: _mariadb_options(services[name]).get("server_id") for name in MARIADB_SERVICES}
    assert ids == {"mariadb1": "101", "mariadb2": "102", "mariadb3": "103"}


@pytest.mark.parametrize("name", MARIADB_SERVICES)
def test_mariadb_credentials_and_healthcheck(
    services: dict[str, dict[str, Any]], name: str
) -> None:
    service = services[name]
    environment = service["environment"]
    assert "MARIADB_ROOT_PASSWORD" in environment
    test = service["healthcheck"]["test"]
    command = " ".join(test) if isinstance(test, list) else test
    assert ("healthcheck.sh" in command and "--innodb_initialized" in command) or (
        "mariadb-admin" in command and "ping" in command
    )


def test_mariadb_init_scripts_get_their_variables_and_write_no_binlog(
    services: dict[str, dict[str, Any]],
) -> None:
    for name in MARIADB_SERVICES:
        init_dirs = [
            host
            for host, target in _bind_mounts(services[name])
            if target.rstrip("/") == "/docker-entrypoint-initdb.d"
        ]
        assert init_dirs, f"{name}: no init scripts mounted (orc and app users)"
        scripts = [p for d in init_dirs for p in sorted(d.iterdir()) if p.suffix in (".sh", ".sql")]
        assert scripts
        text = "\n".join(p.read_text() for p in scripts)
        # Users created on every server must not become GTIDs only that server has.
        off = re.search(r"^SET\s+(SESSION\s+)?sql_log_bin\s*=\s*0", text, re.I | re.M)
        first_write = re.search(r"^(CREATE|GRANT|INSERT|ALTER)\b", text, re.I | re.M)
        assert off, f"{name}: init scripts must SET sql_log_bin = 0"
        assert first_write is None or off.start() < first_write.start()
        assert not re.search(r"sql_log_bin\s*=\s*(1|ON)\b", text, re.I)
        environment = services[name]["environment"]
        for script in scripts:
            if script.suffix == ".sh":
                needed = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)\}", script.read_text()))
                missing = needed - environment.keys()
                assert not missing, f"{name}: {script.name} needs {sorted(missing)}"


@pytest.mark.skipif(shutil.which("sh") is None, reason="no sh")
def test_shell_scripts_have_valid_syntax() -> None:
    scripts = [BOOTSTRAP, *sorted((COMPOSE_DIR / "init").glob("*.sh"))]
    scripts += sorted((COMPOSE_DIR / "init-target").glob("*.sh"))
    for script in scripts:
        result = subprocess.run(["sh", "-n", str(script)], capture_output=True, text=True)
        assert result.returncode == 0, f"{script.name}: {result.stderr}"


# -- bootstrap -------------------------------------------------------------------------------


def _ctl_calls(script: str) -> list[list[str]]:
    """The argument lists of the topology-changing ``ctl ...`` commands in the script, including
    those passed through ``ensure "<get command>" <create command>``, in order."""
    calls = []
    for line in script.splitlines():
        line = line.strip()
        if not line.startswith(("ensure ", "ctl ", "orchestrator ctl ")):
            continue
        words = shlex.split(line.split("|")[0], comments=True)
        if words[:1] == ["ensure"]:
            words = words[2:]
        else:
            words = words[words.index("ctl") + 1 :]
        if words and words[0] in BOOTSTRAP_COMMANDS:
            calls.append(words)
    return calls


def test_bootstrap_registers_one_tablet_per_mariadb(services: dict[str, dict[str, Any]]) -> None:
    bootstrap = services["bootstrap"]
    mounted = [host for host, _ in _bind_mounts(bootstrap)]
    assert BOOTSTRAP.resolve() in mounted, "bootstrap.sh is not mounted into the bootstrap service"
    assert any("bootstrap.sh" in arg for arg in _command(bootstrap))

    calls = _ctl_calls(BOOTSTRAP.read_text())
    commands = [call[0] for call in calls]
    assert commands.index("CreateKeyspace") < commands.index("CreateShard")
    assert commands.index("CreateShard") < commands.index("AddTablet")
    assert commands[-1] == "InitShardPrimary"
    assert ["CreateKeyspace", "commerce"] in calls
    assert ["CreateShard", "commerce/0"] in calls

    tablets = {}
    for call in calls:
        if call[0] != "AddTablet":
            continue
        alias, shard = call[1], call[2]
        assert shard == "commerce/0"
        host = _flag(call, "--mysql-host")
        assert host in MARIADB_SERVICES, f"{alias}: --mysql-host {host} is not a MariaDB service"
        assert _flag(call, "--mysql-port") == "3306"
        assert _flag(call, "--type") == "replica"
        # zone1-<server_id>: the tablet's uid is the server's server_id.
        server_id = _mariadb_options(services[host])["server_id"]
        assert alias == f"zone1-{server_id}"
        tablets[alias] = host
    assert sorted(tablets.values()) == sorted(MARIADB_SERVICES), "one tablet per MariaDB"
    assert len(tablets) == len(MARIADB_SERVICES)

    init = calls[-1]
    assert init[1] == "commerce/0"
    assert _flag(init, "--primary") in tablets


def test_bootstrap_talks_to_the_orchestrator_service(services: dict[str, dict[str, Any]]) -> None:
    script = BOOTSTRAP.read_text()
    server = re.search(r"--server\s+\"?\$\{?(\w+)", script)
    if server:  # the URL comes from a variable: check its value or default
        variable = server.group(1)
        default = re.search(rf"{variable}=\"\$\{{\w+:-([^}}]+)\}}\"", script)
        url = services["bootstrap"].get("environment", {}).get("ORC_SERVER") or (
            default.group(1) if default else ""
        )
    else:
        match = re.search(r"--server\s+(\S+)", script)
        assert match
        url = match.group(1)
    parts = urlsplit(url)
    assert parts.hostname == "orchestrator" and parts.port == 8080
    assert "ORC_API_TOKEN" in services["bootstrap"]["environment"]


# -- migration: the worker and the target ----------------------------------------------------


def test_worker_runs_a_migration_worker_against_etcd(services: dict[str, dict[str, Any]]) -> None:
    worker = services["worker"]
    assert worker["image"] == services["orchestrator"]["image"]
    assert worker["build"] == services["orchestrator"]["build"]
    args = _command(worker)
    line = args[-1] if args[:2] == ["sh", "-c"] else " ".join(args)
    words = shlex.split(line.removeprefix("exec "))
    assert words[:2] == ["orchestrator", "worker"]
    target = _flag(words, "--etcd")
    assert target is not None
    host, _, port = target.partition(":")
    assert host == "etcd" and int(port) == _etcd_client_port(services["etcd"])
    # Unique per replica (`--scale worker=N`): the container's hostname; `$$` is compose's `$`.
    assert _flag(words, "--name") == "$$(hostname)"
    assert worker["depends_on"]["etcd"]["condition"] == "service_healthy"
    assert worker["depends_on"]["target"]["condition"] == "service_healthy"
    # SIGTERM drains: the grace period must leave it time before SIGKILL.
    assert worker.get("stop_signal", "SIGTERM") == "SIGTERM"
    grace = str(worker["stop_grace_period"])
    assert grace.endswith("s") and int(grace[:-1]) >= 10
    assert not worker.get("ports"), "a worker listens on nothing"
    orchestrator_env = services["orchestrator"]["environment"]
    for name in ("ORC_MYSQL_USER", "ORC_MYSQL_PASSWORD"):
        assert worker["environment"][name] == orchestrator_env[name]
    # The worker service runs the subtasks; the service instances only schedule them.
    assert str(orchestrator_env["ORC_WORKER_ENABLED"]).lower() == "false"


def test_target_is_a_writable_mariadb_outside_the_topology(
    services: dict[str, dict[str, Any]],
) -> None:
    target = services["target"]
    assert target["image"].startswith("mariadb:10.11")
    options = _mariadb_options(target)
    assert options.get("read_only", "0") == "0", "the target must be writable"
    assert "skip_slave_start" not in options or options["skip_slave_start"] == "0"
    source_ids = {_mariadb_options(services[n])["server_id"] for n in MARIADB_SERVICES}
    assert options["server_id"] not in source_ids
    assert _named_volumes(target), "the target's data must live in a named volume"
    assert target["healthcheck"]["test"]
    # Not a tablet: bootstrap registers only the shard's servers.
    hosts = {_flag(call, "--mysql-host") for call in _ctl_calls(BOOTSTRAP.read_text())}
    assert "target" not in hosts
    assert not target.get("ports"), "the target is reachable on the compose network only"
    environment = target["environment"]
    orchestrator_env = services["orchestrator"]["environment"]
    for name in ("ORC_MYSQL_USER", "ORC_MYSQL_PASSWORD"):
        assert environment[name] == orchestrator_env[name]
    init_dirs = [
        h for h, t in _bind_mounts(target) if t.rstrip("/") == "/docker-entrypoint-initdb.d"
    ]
    assert init_dirs
    text = "\n".join(p.read_text() for d in init_dirs for p in sorted(d.glob("*.sh")))
    assert re.search(r"^SET\s+SESSION\s+sql_log_bin\s*=\s*0", text, re.I | re.M)
    grant = re.search(r"GRANT\s+([A-Z ,]+)\s+ON\s+\*\.\*\s+TO\s+'\$\{ORC_MYSQL_USER\}'", text)
    assert grant, "the target grants the orchestrator's account nothing"
    granted = {g.strip() for g in grant.group(1).split(",")}
    # The target privileges the README's Data migration section lists.
    assert {"SELECT", "INSERT", "UPDATE", "DELETE", "CREATE", "DROP", "ALTER", "INDEX"} <= granted
    needed = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)\}", text))
    assert needed <= environment.keys(), sorted(needed - environment.keys())


def test_sources_grant_select_for_the_full_load() -> None:
    text = (COMPOSE_DIR / "init" / "10-users.sh").read_text()
    assert re.search(r"GRANT\s+SELECT\s+ON\s+\*\.\*\s+TO\s+'\$\{ORC_MYSQL_USER\}'", text)
    assert "REPLICATION SLAVE" in text


def test_example_task_moves_the_bootstrap_shard_into_the_target(
    services: dict[str, dict[str, Any]],
) -> None:
    from migration.spec import parse_task_yaml

    files = sorted(TASKS_DIR.glob("*.yaml"))
    assert files, "no example task in compose/tasks"
    mounted = {t.rstrip("/"): h for h, t in _bind_mounts(services["orchestrator"])}
    assert mounted.get("/tasks") == TASKS_DIR.resolve(), "compose/tasks is not mounted at /tasks"
    shards = {call[1] for call in _ctl_calls(BOOTSTRAP.read_text()) if call[0] == "CreateShard"}
    for path in files:
        spec = parse_task_yaml(path.read_text())
        assert spec.target.host == "target" and spec.target.port == 3306, path.name
        for source in spec.sources:
            assert source.endpoint is None and source.source_id in shards, source
        assert f"/tasks/{path.name}" in path.read_text(), "the file shows its start-task line"
