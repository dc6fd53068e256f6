"""Start and stop real MariaDB servers on loopback, without Docker: for the test suite and for
``orchestrator local up``.

Each server gets its own directory (``base_dir``) holding ``my.cnf``, the error log, the pid file
and the datadir. Datadirs are not initialised one by one: ``mariadb-install-db`` runs once per
machine and server version into a cached template, which is then copied (a copy of ~20 MB takes a
few tens of milliseconds, the installer about 0.4 s). On first start the launcher creates the
orchestrator's admin user and an application user, then runs ``RESET MASTER`` so that every server
begins with an empty binlog and GTID state and replicas can be attached to any fresh primary
without errant transactions.

Servers run in their own session, so a Ctrl-C in a test runner or in ``local up`` does not kill
them implicitly; they are stopped explicitly (``stop``: SIGTERM, ``kill``: SIGKILL). The process is
spawned with :class:`subprocess.Popen`, not asyncio's subprocess API: asyncio's transport kills a
still-running child when it is garbage collected, which would take the servers of ``local up``
down with the launching process.

The configuration favours many small servers and durability: a 16 MB buffer pool, small redo
log, no performance schema; ``sync_binlog=1`` and ``innodb_flush_log_at_trx_commit=1`` so that no
acknowledged write is lost to SIGKILL; GTID strict mode; replication never starts by itself
(``skip-slave-start``), only the orchestrator configures it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncmy
from asyncmy import errors as driver_errors
from asyncmy.connection import Connection as DriverConnection

from orchestrator.local.ports import free_port

__all__ = [
    "DEFAULT_ADMIN_PASSWORD",
    "DEFAULT_ADMIN_USER",
    "DEFAULT_APP_PASSWORD",
    "DEFAULT_APP_USER",
    "MariadbServer",
    "MariadbStartError",
    "free_port",
    "start_mariadb",
]

DEFAULT_ADMIN_USER = "orc"
DEFAULT_ADMIN_PASSWORD = "orc-local-password"
DEFAULT_APP_USER = "app"
DEFAULT_APP_PASSWORD = "app-local-password"

MARIADBD = os.environ.get("MARIADBD", shutil.which("mariadbd") or "/usr/sbin/mariadbd")
INSTALL_DB = os.environ.get(
    "MARIADB_INSTALL_DB", shutil.which("mariadb-install-db") or "/usr/bin/mariadb-install-db"
)
HOST = "127.0.0.1"
START_TIMEOUT_S = 30.0
_INNODB_LOG_FILE_SIZE = "8M"
_PORT_ATTEMPTS = 5
_SOCKET_PATH_MAX = 100  # sun_path holds 108 bytes; keep a margin
_APP_PRIVILEGES = "SELECT, INSERT, UPDATE, DELETE, CREATE, DROP, INDEX, ALTER"
_template_lock = threading.Lock()
_template_cache: list[Path] = []  # the template path once known in this process


class MariadbStartError(RuntimeError):
    """A server did not come up; the message ends with the tail of its error log."""


@dataclass
class MariadbServer:
    """One local MariaDB server, started by :func:`start_mariadb`.

    Serialisable with :meth:`to_json` / :meth:`from_json` so that ``local down`` in a later
    process can stop what ``local up`` started. The credentials are included: the state file is
    local, and the cluster it describes listens on loopback only.
    """

    name: str
    server_id: int
    port: int
    datadir: Path
    socket: Path
    pid: int
    base_dir: Path
    host: str = HOST
    admin_user: str = DEFAULT_ADMIN_USER
    admin_password: str = field(default=DEFAULT_ADMIN_PASSWORD, repr=False)
    app_user: str = DEFAULT_APP_USER
    app_password: str = field(default=DEFAULT_APP_PASSWORD, repr=False)
    # Run mariadbd under this command, e.g. ``("ip", "netns", "exec", "ns1")`` for a server in
    # a network namespace (tests of network partitions). It must exec mariadbd (same pid).
    command_prefix: tuple[str, ...] = ()
    _process: subprocess.Popen[bytes] | None = field(
        default=None, repr=False, compare=False, init=False
    )

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def config_file(self) -> Path:
        return self.base_dir / "my.cnf"

    @property
    def error_log(self) -> Path:
        return self.base_dir / "error.log"

    @property
    def pid_file(self) -> Path:
        return self.base_dir / "mariadbd.pid"

    # -- lifecycle ----------------------------------------------------------------------------

    def is_running(self) -> bool:
        """True while our server process exists (a zombie or a reused pid does not count)."""
        if self._process is not None:
            return self._process.poll() is None
        return _pid_is_our_server(self.pid, self.config_file)

    def running_pid(self) -> int:
        """The pid of this server's mariadbd running now (0 if none), found from its pid file or,
        while it starts or after the file was lost, from its ``--defaults-file`` in /proc: not
        the pid recorded when it was started, which a restart elsewhere has made stale."""
        if self._process is not None and self._process.poll() is None:
            return self.pid
        with contextlib.suppress(OSError, ValueError):
            pid = int(self.pid_file.read_text().split()[0])
            if _pid_is_our_server(pid, self.config_file):
                return pid
        from orchestrator.local import procs

        found = procs.with_arg(f"--defaults-file={self.config_file}")
        return found[0].pid if found else 0

    def refresh(self) -> bool:
        """Point ``pid`` at the process running now (another process may have restarted the
        server); True if one runs."""
        pid = self.running_pid()
        if pid and pid != self.pid:
            self.pid, self._process = pid, None
        return pid != 0

    async def stop(self, timeout: float = 10.0) -> None:
        """Clean shutdown (SIGTERM); SIGKILL if it has not exited after ``timeout`` seconds."""
        if not self.is_running():
            return
        _signal(self.pid, signal.SIGTERM)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            if not self.is_running():
                return
            await asyncio.sleep(0.02)
        self.kill()

    def kill(self) -> None:
        """SIGKILL, as a crash would, and return once the process is gone (reaped if it is our
        child). Blocking, but SIGKILL takes effect within milliseconds."""
        if not self.is_running():
            return
        _signal(self.pid, signal.SIGKILL)
        if self._process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._process.wait(timeout=10)
            return
        deadline = time.monotonic() + 10
        while self.is_running() and time.monotonic() < deadline:
            time.sleep(0.005)

    async def start_again(self, timeout: float = START_TIMEOUT_S) -> None:
        """Restart a stopped (or killed) server on the same datadir and port; returns when it
        accepts the admin user's queries (crash recovery included)."""
        if self.is_running():
            raise MariadbStartError(f"{self.name} is still running (pid {self.pid})")
        self._process = _spawn(self.config_file, self.error_log, self.command_prefix)
        self.pid = self._process.pid
        await _wait_ready(self, self.admin_user, self.admin_password, timeout)

    # -- state file ---------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "server_id": self.server_id,
            "host": self.host,
            "port": self.port,
            "datadir": str(self.datadir),
            "socket": str(self.socket),
            "pid": self.pid,
            "base_dir": str(self.base_dir),
            "admin_user": self.admin_user,
            "admin_password": self.admin_password,
            "app_user": self.app_user,
            "app_password": self.app_password,
            **({"command_prefix": list(self.command_prefix)} if self.command_prefix else {}),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> MariadbServer:
        return cls(
            name=str(data["name"]),
            server_id=int(data["server_id"]),
            host=str(data.get("host", HOST)),
            port=int(data["port"]),
            datadir=Path(data["datadir"]),
            socket=Path(data["socket"]),
            pid=int(data["pid"]),
            base_dir=Path(data["base_dir"]),
            admin_user=str(data.get("admin_user", DEFAULT_ADMIN_USER)),
            admin_password=str(data.get("admin_password", DEFAULT_ADMIN_PASSWORD)),
            app_user=str(data.get("app_user", DEFAULT_APP_USER)),
            app_password=str(data.get("app_password", DEFAULT_APP_PASSWORD)),
            command_prefix=tuple(str(a) for a in data.get("command_prefix", ())),
        )


async def start_mariadb(
    base_dir: Path,
    *,
    server_id: int,
    port: int | None = None,
    name: str | None = None,
    admin_user: str = DEFAULT_ADMIN_USER,
    admin_password: str = DEFAULT_ADMIN_PASSWORD,
    app_user: str = DEFAULT_APP_USER,
    app_password: str = DEFAULT_APP_PASSWORD,
    extra_options: Mapping[str, str] | None = None,
    timeout: float = START_TIMEOUT_S,
    host: str = HOST,
    command_prefix: Sequence[str] = (),
) -> MariadbServer:
    """Create a fresh server in ``base_dir`` (its own directory, created if missing; the
    datadir must not exist yet) and start it; return once the admin user can query it.

    Without ``port`` a free one is chosen, and another one if the server loses the race for it.
    ``extra_options`` are added to ``my.cnf`` (``{"option": "value"}``, ``""`` for a bare flag).
    ``host`` is the address the server binds (unless ``extra_options`` names another
    ``bind-address``), reports and is reached at; ``command_prefix`` runs mariadbd under another
    command that execs it, e.g. ``("ip", "netns", "exec", "ns1")``. Both are for tests that put
    a server in a network namespace; by default the server listens on 127.0.0.1.
    """
    if admin_user == "root":
        raise ValueError("admin_user must not be root: root stays local to the datadir")
    base_dir = Path(base_dir).absolute()
    datadir = base_dir / "data"
    if datadir.exists():
        raise FileExistsError(f"{datadir} exists; use MariadbServer.start_again for it")
    base_dir.mkdir(parents=True, exist_ok=True)
    template = await asyncio.to_thread(_template_datadir)
    await asyncio.to_thread(shutil.copytree, template, datadir)
    server = MariadbServer(
        name=name or f"mariadb-{server_id}",
        server_id=server_id,
        port=port or 0,
        datadir=datadir,
        socket=_socket_path(base_dir),
        pid=0,
        base_dir=base_dir,
        host=host,
        admin_user=admin_user,
        admin_password=admin_password,
        app_user=app_user,
        app_password=app_password,
        command_prefix=tuple(command_prefix),
    )
    for attempt in range(1 if port else _PORT_ATTEMPTS):
        if not port:
            server.port = free_port()
        _write_config(server, extra_options or {})
        server.error_log.unlink(missing_ok=True)
        server._process = _spawn(server.config_file, server.error_log, server.command_prefix)
        server.pid = server._process.pid
        try:
            # The template's root@127.0.0.1 has no password until _create_users runs.
            await _wait_ready(server, "root", "", timeout)
        except MariadbStartError:
            server.kill()
            if port or attempt == _PORT_ATTEMPTS - 1 or not _lost_port_race(server):
                raise
            continue
        break
    try:
        await _create_users(server)
    except BaseException:
        server.kill()
        raise
    return server


# -- datadir template -------------------------------------------------------------------------


def _template_datadir() -> Path:
    """An initialised, never started datadir for this mariadbd version, created once.

    Built in a private directory and renamed into place, so concurrent test processes either
    see a complete template or build their own and discard it.
    """
    with _template_lock:
        if _template_cache:
            template = _template_cache[0]
            if (template / "READY").exists():
                return template
        version = subprocess.run(
            [MARIADBD, "--version"], capture_output=True, text=True, check=True
        ).stdout.strip()
        key = f"{MARIADBD}|{version}|{_INNODB_LOG_FILE_SIZE}|{os.geteuid()}"
        digest = hashlib.sha256(key.encode()).hexdigest()[:16]
        template = Path(tempfile.gettempdir()) / f"orchestrator-mariadb-template-{digest}"
        _template_cache[:] = [template]
        if (template / "READY").exists():
            return template
        work = template.with_name(f"{template.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}")
        try:
            result = subprocess.run(
                [
                    INSTALL_DB,
                    "--no-defaults",
                    "--auth-root-authentication-method=normal",
                    "--skip-test-db",
                    f"--datadir={work}",
                    f"--innodb-log-file-size={_INNODB_LOG_FILE_SIZE}",
                    "--innodb-buffer-pool-size=16M",
                    *(["--user=root"] if os.geteuid() == 0 else []),
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            if result.returncode != 0:
                raise MariadbStartError(
                    f"mariadb-install-db failed ({result.returncode}):\n"
                    f"{result.stdout[-2000:]}{result.stderr[-2000:]}"
                )
            (work / "READY").write_text(version + "\n")
            try:
                work.rename(template)
            except OSError:
                if not (template / "READY").exists():
                    raise
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return template


# -- process ----------------------------------------------------------------------------------


def _socket_path(base_dir: Path) -> Path:
    """The unix socket, in ``base_dir`` unless that path is too long for a socket address."""
    path = base_dir / "mariadbd.sock"
    if len(str(path)) <= _SOCKET_PATH_MAX:
        return path
    digest = hashlib.sha256(str(base_dir).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"orchestrator-mariadb-{digest}.sock"


def _write_config(server: MariadbServer, extra: Mapping[str, str]) -> None:
    options: dict[str, str] = {
        "datadir": str(server.datadir),
        "bind-address": server.host,
        "port": str(server.port),
        "socket": str(server.socket),
        "pid-file": str(server.pid_file),
        "log-error": str(server.error_log),
        "server-id": str(server.server_id),
        "report-host": server.host,
        "report-port": str(server.port),
        "log-bin": "mariadb-bin",
        "relay-log": "relay-bin",
        "log-slave-updates": "ON",
        "binlog-format": "ROW",
        # Full row images with column names in the binlog: what a migration task's binlog
        # reader needs to map row events to columns without asking the server for the schema.
        "binlog-row-image": "FULL",
        "binlog-row-metadata": "FULL",
        "gtid-strict-mode": "ON",
        "gtid-domain-id": "0",
        "skip-name-resolve": "",
        "skip-slave-start": "",
        "relay-log-recovery": "ON",
        "sync-binlog": "1",
        "innodb-flush-log-at-trx-commit": "1",
        # A replica notices a silent source after this many seconds (heartbeats come every 1 s).
        "slave-net-timeout": "5",
        "innodb-buffer-pool-size": "16M",
        "innodb-log-file-size": _INNODB_LOG_FILE_SIZE,
        "innodb-buffer-pool-dump-at-shutdown": "OFF",
        "innodb-buffer-pool-load-at-startup": "OFF",
        "performance-schema": "OFF",
        "max-connections": "200",
    }
    if os.geteuid() == 0:
        options["user"] = "root"
    options.update(extra)
    lines = ["# Written by orchestrator.local.mariadb; rewritten on each start.", "[mysqld]"]
    lines += [key if value == "" else f"{key}={value}" for key, value in options.items()]
    server.config_file.write_text("\n".join(lines) + "\n")


def _spawn(
    config_file: Path, error_log: Path, prefix: Sequence[str] = ()
) -> subprocess.Popen[bytes]:
    with open(error_log, "ab") as log_file:
        return subprocess.Popen(
            [*prefix, MARIADBD, f"--defaults-file={config_file}"],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=log_file,
            start_new_session=True,
            close_fds=True,
        )


async def _wait_ready(server: MariadbServer, user: str, password: str, timeout: float) -> None:
    """Poll until ``SELECT 1`` works over TCP; fail fast, with the error log, if the process
    exits first."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        if not server.is_running() or _aborting(server.error_log):
            # An aborting server can take seconds to shut InnoDB down again: don't wait for it.
            server.kill()
            raise MariadbStartError(
                f"{server.name} (port {server.port}) exited during startup:\n"
                f"{_log_tail(server.error_log)}"
            )
        if await _answers(server, user, password):
            return
        if loop.time() >= deadline:
            server.kill()
            raise MariadbStartError(
                f"{server.name} (port {server.port}) not ready after {timeout:g}s:\n"
                f"{_log_tail(server.error_log)}"
            )
        await asyncio.sleep(0.02)


async def _answers(server: MariadbServer, user: str, password: str) -> bool:
    """One readiness probe: connect and read the server's datadir, giving up after a short
    while.

    Short, because the port may belong to someone else who accepts and never answers (we lost
    the race for it), and the server's own abort is checked between probes. The datadir, because
    the one answering may be another test's fresh server on the port we lost (its template root
    has no password either): taking it for ours once had the users created on a server that was
    then stopped under us (CI: "Lost connection" in ``_create_users``). Ours then exits with
    "Address already in use", and the caller starts again on another port.
    """
    conn = DriverConnection(
        **_root_or_tcp(server, user), user=user, password=password, connect_timeout=0.5
    )
    try:
        async with asyncio.timeout(0.5):
            await conn.connect()
            async with conn.cursor() as cursor:
                await cursor.execute("SELECT @@GLOBAL.datadir")
                (datadir,) = await cursor.fetchone()
        return Path(datadir).resolve() == server.datadir.resolve()
    except driver_errors.OperationalError as exc:
        if exc.args and exc.args[0] == 1045:
            raise MariadbStartError(
                f"{server.name} (port {server.port}) is up but refuses {user!r}: {exc}"
            ) from exc
        return False
    except (TimeoutError, OSError):
        return False
    finally:
        conn.close()


def _root_or_tcp(server: MariadbServer, user: str) -> dict[str, Any]:
    """Where to connect: TCP to the server's address, except for the template's root on a server
    that is not on 127.0.0.1 (e.g. in a network namespace), which only ``root@localhost`` (the
    unix socket) can reach before the users exist."""
    if user == "root" and server.host != HOST:
        return {"unix_socket": str(server.socket)}
    return {"host": server.host, "port": server.port}


async def _create_users(server: MariadbServer) -> None:
    """Admin user (everything, for the orchestrator and replication), app user (data only: no
    SUPER or READ ONLY ADMIN, so ``read_only`` fences it), root reachable only through the local
    socket with the admin password, and an empty binlog and GTID state."""
    conn = await asyncmy.connect(
        **_root_or_tcp(server, "root"), user="root", password="", connect_timeout=5.0
    )
    try:
        async with conn.cursor() as cursor:
            await cursor.execute("SET SESSION sql_log_bin = 0")
            for host in ("%", "localhost"):
                await cursor.execute(
                    "CREATE USER %s@%s IDENTIFIED BY %s",
                    (server.admin_user, host, server.admin_password),
                )
                await cursor.execute(
                    "GRANT ALL PRIVILEGES ON *.* TO %s@%s WITH GRANT OPTION",
                    (server.admin_user, host),
                )
            await cursor.execute(
                "CREATE USER %s@'%%' IDENTIFIED BY %s", (server.app_user, server.app_password)
            )
            await cursor.execute(f"GRANT {_APP_PRIVILEGES} ON *.* TO %s@'%%'", (server.app_user,))
            await cursor.execute(
                "ALTER USER 'root'@'localhost' IDENTIFIED BY %s", (server.admin_password,)
            )
            await cursor.execute("SELECT Host FROM mysql.user WHERE User = 'root'")
            for (host,) in await cursor.fetchall():
                if host != "localhost":
                    await cursor.execute("DROP USER 'root'@%s", (host,))
            # Everything above bypassed the binlog, so it is normally still empty; RESET MASTER
            # (which takes about a second) is only needed if something slipped in.
            await cursor.execute("SELECT @@GLOBAL.gtid_binlog_state, @@GLOBAL.gtid_slave_pos")
            binlog_state, slave_pos = (await cursor.fetchone()) or ("", "")
            if binlog_state or slave_pos:
                await cursor.execute("RESET MASTER")
                await cursor.execute("SET GLOBAL gtid_slave_pos = ''")
    finally:
        conn.close()


def _aborting(error_log: Path) -> bool:
    """The server logged that it gives up (e.g. its port is taken) and is about to exit."""
    try:
        with open(error_log, "rb") as log_file:
            log_file.seek(0, os.SEEK_END)
            log_file.seek(max(0, log_file.tell() - 4096))
            return b"[ERROR] Aborting" in log_file.read()
    except OSError:
        return False


def _lost_port_race(server: MariadbServer) -> bool:
    text = _log_tail(server.error_log)
    return "Address already in use" in text or "Do you already have another" in text


def _log_tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"(no error log: {exc})"


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _pid_is_our_server(pid: int, config_file: Path) -> bool:
    """For a server started by another process: alive, not a zombie, and still mariadbd with
    our config (pids get reused)."""
    if pid <= 0:
        return False
    proc = Path(f"/proc/{pid}")
    if not proc.exists():
        if Path("/proc/self").exists():
            return False
        try:  # no procfs: the best we can do is ask whether the pid exists
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    try:
        stat = (proc / "stat").read_text()
        cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False
    state = stat.rsplit(")", 1)[-1].split()[0] if ")" in stat else ""
    if state in ("Z", "X"):
        return False
    # A process that is exiting has already released its memory, and with it an empty
    # cmdline: still running until it is gone (otherwise stop() would return too early).
    return not cmdline or str(config_file) in cmdline
