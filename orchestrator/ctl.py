"""`orchestrator ctl <Command> [args]`: run a command on an orchestrator service over HTTP.

Commands, their positionals and `--flags` are generated from the command registry
(`orchestrator.commands`), with vtctldclient's names: `PlannedReparentShard ks/0 --new-primary
zone1-102`. The CLI asks the server to stream: progress goes to stderr as it happens, the
result to stdout: JSON, or for reads a table (`--format table`, the default on a terminal; see
`orchestrator.tables`). `--timeout` is sent as the request's deadline: a command whose client
gave up never starts acting on the server later.

Exit codes: 0 success; 1 the command failed (the error is on stderr); 2 bad usage; 3 the
server could not be reached or answered something that is not the API.

Start time matters (an operator runs this many times a night): only the command table and
argparse are imported, the request is made by `orchestrator.ctl_http` (plain HTTP on a socket),
and only the named command's arguments are declared. `https://` goes through `http.client`; a
proxy in the environment (`http_proxy`...) or a redirect from the server through
`urllib.request`; each imported only then.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
import urllib.parse
from typing import Any

from orchestrator.commands import COMMANDS, Arg, Command
from orchestrator.ctl_http import ProtocolError, post

DEFAULT_SERVER = "http://127.0.0.1:8080"
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3

_LIST_METAVARS = {"source_list": "SOURCE", "member_name_list": "NAME"}
_METAVARS = {
    "keyspace_shard": "KEYSPACE/SHARD",
    "alias": "ALIAS",
    "alias_list": "ALIAS[,ALIAS...]",
    "keyspace": "KEYSPACE",
    "tablet_type": "TYPE",
    "duration": "DURATION",
    "host": "HOST",
    "port": "PORT",
    "durability": "POLICY",
    "text": "TEXT",
    "task_file": "FILE",
    "task_name": "TASK",
    "source_id": "SOURCE",
    "source_op": "create|stop|show",
}


# One line of advice per error code where there is one obvious next step.
_HINTS = {
    "UNAUTHENTICATED": "pass --token or set ORC_API_TOKEN (the service's ORC_API_TOKEN)",
    "LOCK_HELD": "another workflow holds the shard lock: wait longer (--lock-timeout 2m), see "
    "who holds it (ctl ShowLocks), or break a stuck one with UnlockShard --force --reason ...",
    "DEADLINE_EXCEEDED": "nothing was changed: the command could not start before --timeout; "
    "retry with a longer --timeout (or --lock-timeout)",
}


class _Formatter(argparse.RawDescriptionHelpFormatter):
    pass


_DESCRIPTION: dict[str, str] = dict(
    description="Run a command on an orchestrator service. Progress goes to stderr, the "
    "result to stdout (JSON; reads as a table on a terminal, see --format); the exit code is 0 "
    "only on success (1: the command failed, 2: bad usage, 3: server unreachable).",
    epilog="Each command has --help. Examples:\n"
    + "\n".join(f"  orchestrator ctl {e}" for c in COMMANDS.values() for e in c.examples[:1]),
)


def add_ctl_parser(sub: Any) -> None:
    p = sub.add_parser(
        "ctl",
        help="run a command on an orchestrator service (vtctldclient-style)",
        formatter_class=_Formatter,
        description=_DESCRIPTION["description"],
        epilog=_DESCRIPTION["epilog"],
    )
    _configure(p)


def main(argv: list[str]) -> int:
    """`orchestrator ctl ...` without the rest of the `orchestrator` command (fast start)."""
    p = argparse.ArgumentParser(
        prog="orchestrator ctl", formatter_class=_Formatter,
        description=_DESCRIPTION["description"], epilog=_DESCRIPTION["epilog"],
    )  # fmt: skip
    _configure(p, only=_command_named(argv))
    args, rest = p.parse_known_args(argv)
    return int(run(args, rest))


# The flags accepted before the command: with a value, and without.
_VALUE_FLAGS = frozenset({"--server", "--token", "--timeout", "--format"})
_BOOL_FLAGS = frozenset({"--quiet"})


def _command_named(argv: list[str]) -> str | None:
    """The command argv surely runs, or None when that takes argparse to tell (help, an
    abbreviated or unknown flag, an unknown command): then every command is declared."""
    words = iter(argv)
    for word in words:
        if word in _VALUE_FLAGS:
            next(words, None)
        elif word in _BOOL_FLAGS or word.split("=", 1)[0] in _VALUE_FLAGS:
            continue
        elif word.startswith("-"):
            return None
        else:
            return word if word in COMMANDS else None
    return None


def _configure(p: argparse.ArgumentParser, *, only: str | None = None) -> None:
    """Every command as a sub-command; with `only` (the command being run), that one alone:
    the listing of the others is only ever shown when no command is named."""
    _add_connection_flags(p, suppress=False)
    csub = p.add_subparsers(dest="command", metavar="<Command>", title="commands", required=True)
    for cmd in COMMANDS.values():
        if only is None or cmd.name == only:
            _add_command(csub, cmd)
    p.set_defaults(func=run)


def _add_connection_flags(p: argparse.ArgumentParser, *, suppress: bool) -> None:
    """--server and --token, accepted before or after the command name."""
    default = argparse.SUPPRESS if suppress else None
    p.add_argument(
        "--server",
        default=default,
        metavar="URL",
        help=f"orchestrator URL (default: $ORC_SERVER or {DEFAULT_SERVER})",
    )
    p.add_argument("--token", default=default, help="API bearer token (default: $ORC_API_TOKEN)")
    p.add_argument(
        "--timeout",
        type=_duration,
        default=default,
        metavar="DURATION",
        help="give up when the server says nothing for this long: seconds or a duration like "
        '"30s", "5m" (default 10m)',
    )
    p.add_argument("--quiet", action="store_true", default=default,
                   help="no progress lines on stderr")  # fmt: skip
    p.add_argument(
        "--format", choices=("table", "json"), default=default,
        help="how reads print their result (default: table on a terminal, else json)",
    )  # fmt: skip


def _duration(text: str) -> float:
    from orchestrator.commands import parse_duration
    from topo.errors import InvalidArgumentError

    try:
        return parse_duration(float(text) if re.fullmatch(r"[0-9]+(\.[0-9]+)?", text) else text)
    except InvalidArgumentError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def server_url(text: str) -> str:
    """The service's base URL from `--server`/`$ORC_SERVER`: `host:port` means
    `http://host:port`; anything else that is no http(s) URL with a host is a ValueError."""
    url = text.strip()
    if "://" not in url:
        url = "http://" + url
    parsed = urllib.parse.urlsplit(url)
    try:
        port = parsed.port
    except ValueError:
        port = -1
    if parsed.scheme not in ("http", "https") or not parsed.hostname or port == -1:
        raise ValueError(
            f"--server {text!r} is not a server address: want host:port or http://host:port "
            f"(e.g. {DEFAULT_SERVER})"
        )
    return url.rstrip("/")


def _unknown_flags_hint(rest: list[str], name: str) -> str:
    """A hint for vtctldclient's underscore spellings (`--new_primary` -> `--new-primary`)."""
    known = {a.flag for a in COMMANDS[name].args} if name in COMMANDS else set()
    known |= {"--server", "--token", "--timeout", "--quiet", "--format"}
    hints = []
    for word in rest:
        flag = word.split("=", 1)[0]
        if flag.startswith("--") and "_" in flag and flag.replace("_", "-") in known:
            hints.append(f"{flag} is spelled {flag.replace('_', '-')} here")
    return f" ({'; '.join(hints)})" if hints else ""


def _add_command(csub: Any, cmd: Command) -> None:
    description = cmd.summary + (f"\n\n{cmd.description}" if cmd.description else "")
    cp = csub.add_parser(
        cmd.name, help=cmd.summary, description=description, formatter_class=_Formatter,
        epilog="Examples:\n" + "\n".join(f"  orchestrator ctl {e}" for e in cmd.examples)
        if cmd.examples else None,
    )  # fmt: skip
    for arg in cmd.args:
        _add_arg(cp, arg)
    _add_connection_flags(cp, suppress=True)


def _add_arg(cp: argparse.ArgumentParser, arg: Arg) -> None:
    metavar = _METAVARS.get(arg.kind, arg.name.upper())
    help_text = arg.help + (
        f" (default: {arg.default})" if arg.default not in (None, False) else ""
    )
    if arg.kind == "bool":
        cp.add_argument(arg.flag, dest=arg.name, action="store_true", default=None, help=help_text)
        return
    if arg.kind in ("source_list", "member_name_list"):  # DM's repeatable --source S
        cp.add_argument(arg.flag, dest=arg.name, metavar=_LIST_METAVARS[arg.kind],
                        action="append", default=None, help=help_text)  # fmt: skip
        return
    if arg.cli == "positional":
        cp.add_argument(arg.name, metavar=metavar, nargs=None if arg.required else "?",
                        help=help_text)  # fmt: skip
        return
    if arg.cli == "either":
        cp.add_argument(f"{arg.name}_positional", nargs="?", metavar=metavar,
                        help=f"{help_text} (or {arg.flag})")  # fmt: skip
        cp.add_argument(arg.flag, dest=arg.name, metavar=metavar, default=None,
                        help=f"the same as the positional {metavar}")  # fmt: skip
        return
    cp.add_argument(arg.flag, dest=arg.name, metavar=metavar, default=None,
                    required=arg.required, help=help_text)  # fmt: skip


def _to_json(arg: Arg, value: Any) -> Any:
    """The JSON value of a command-line string (the server validates it)."""
    if arg.kind == "task_file":  # the file is read here, on the client
        try:
            with open(value, encoding="utf-8") as f:
                return f.read()
        except (OSError, UnicodeDecodeError) as e:
            raise ValueError(f"cannot read the task file {value}: {e}") from None
    if arg.kind in ("source_list", "member_name_list"):
        return [v.strip() for item in value for v in item.split(",") if v.strip()]
    if arg.kind == "alias_list":
        return [v.strip() for v in value.split(",") if v.strip()]
    if arg.kind == "port":
        return int(value) if value.isdigit() else value
    if arg.kind == "duration" and re.fullmatch(r"[0-9]+(\.[0-9]+)?", value):
        return float(value)
    return value


def build_body(cmd: Command, ns: argparse.Namespace) -> dict[str, Any]:
    body: dict[str, Any] = {}
    for arg in cmd.args:
        value = getattr(ns, arg.name, None)
        if arg.cli == "either":
            positional = getattr(ns, f"{arg.name}_positional", None)
            if positional is not None and value is not None and positional != value:
                raise ValueError(f"{arg.name} given twice: {positional} and {value}")
            value = value if value is not None else positional
        if value is None:
            continue
        body[arg.name] = value if isinstance(value, bool) else _to_json(arg, value)
    return body


def run(args: argparse.Namespace, rest: list[str] | None = None) -> int:
    if rest:
        print(f"orchestrator ctl: unrecognized arguments: {' '.join(rest)}"
              f"{_unknown_flags_hint(rest, args.command)}", file=sys.stderr)  # fmt: skip
        return EXIT_USAGE
    cmd = COMMANDS[args.command]
    try:
        body = build_body(cmd, args)
        server = server_url(args.server or os.environ.get("ORC_SERVER") or DEFAULT_SERVER)
    except ValueError as e:
        print(f"orchestrator ctl {cmd.name}: {e}", file=sys.stderr)
        return EXIT_USAGE
    token = args.token if args.token is not None else os.environ.get("ORC_API_TOKEN", "")
    fmt = args.format or ("table" if sys.stdout.isatty() else "json")
    client = _Client(server, token, timeout=args.timeout or 600.0, quiet=bool(args.quiet),
                     fmt=fmt)  # fmt: skip
    return client.run(cmd.name, body)


_REDIRECTS = frozenset({301, 302, 303, 307, 308})


def _proxied() -> bool:
    """A proxy set in the environment, as urllib.request.getproxies() reads it on POSIX."""
    return any(
        k.lower().endswith("_proxy") and k.lower() != "no_proxy" and v
        for k, v in os.environ.items()
    )


class _Client:
    def __init__(
        self, server: str, token: str, *, timeout: float, quiet: bool, fmt: str = "json"
    ) -> None:
        self.server = server
        self.token = token
        self.timeout = timeout
        self.quiet = quiet
        self.fmt = fmt

    def run(self, name: str, body: dict[str, Any]) -> int:
        url = f"{self.server}/api/v1/commands/{urllib.parse.quote(name)}?stream=1"
        headers = {"Content-Type": "application/json", "Accept": "application/x-ndjson",
                   # The server starts nothing after this: we will not be listening any more.
                   "X-Orchestrator-Deadline": f"{time.time() + self.timeout:.3f}"}  # fmt: skip
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        data = json.dumps(body).encode()
        try:
            resp = None if _proxied() else self._post(url, data, headers)
            if resp is not None and resp.status in _REDIRECTS:
                resp.close()
                resp = None
            if resp is None:
                return self._run_urllib(url, data, headers, name)
        except (OSError, ProtocolError) as e:
            print(f"orchestrator ctl: cannot reach the orchestrator at {self.server}: {e}",
                  file=sys.stderr)  # fmt: skip
            return EXIT_UNREACHABLE
        with resp:
            if not 200 <= resp.status < 300:
                return self._http_error(resp.status, resp.reason, resp.read())
            return self._read_stream(resp, name)

    def _post(self, url: str, data: bytes, headers: dict[str, str]) -> Any:
        """POST as urllib.request.urlopen would without a proxy or a redirect: plain HTTP
        through `ctl_http`, HTTPS through `http.client`."""
        parts = urllib.parse.urlsplit(url)
        target = f"{parts.path}?{parts.query}"
        if parts.scheme == "http":
            return post(parts.hostname or "", parts.port or 80, target, data, headers,
                        host_header=parts.netloc.rpartition("@")[2], timeout=self.timeout)  # fmt: skip
        import http.client

        conn = http.client.HTTPSConnection(parts.hostname or "", parts.port, timeout=self.timeout)
        try:
            conn.request("POST", target, body=data, headers={**headers, "Connection": "close"})
            return conn.getresponse()
        except http.client.HTTPException as e:
            conn.close()
            raise ProtocolError(str(e) or type(e).__name__) from e
        except BaseException:
            conn.close()
            raise

    def _run_urllib(self, url: str, data: bytes, headers: dict[str, str], name: str) -> int:
        """The same request through urllib.request (proxies from the environment, redirects)."""
        import urllib.error
        import urllib.request

        req = urllib.request.Request(url, data=data, headers=headers, method="POST")
        try:
            resp = urllib.request.urlopen(req, timeout=self.timeout)
        except urllib.error.HTTPError as e:
            return self._http_error(e.code, e.reason, e.read())
        except (urllib.error.URLError, OSError, ProtocolError) as e:
            reason = getattr(e, "reason", e)
            print(f"orchestrator ctl: cannot reach the orchestrator at {self.server}: {reason}",
                  file=sys.stderr)  # fmt: skip
            return EXIT_UNREACHABLE
        with resp:
            return self._read_stream(resp, name)

    def _http_error(self, code: int, reason: str, raw: bytes) -> int:
        try:
            doc = json.loads(raw)
        except ValueError:
            doc = None
        if isinstance(doc, dict) and isinstance(doc.get("error"), dict):
            self._print_error(doc["error"], code)
            return EXIT_FAILED
        text = raw.decode(errors="replace").strip()[:500]
        print(f"orchestrator ctl: {self.server} answered HTTP {code}: {text or reason} "
              "(is it an orchestrator?)", file=sys.stderr)  # fmt: skip
        return EXIT_UNREACHABLE

    def _read_stream(self, resp: Any, name: str) -> int:
        workflow_id = None
        try:
            for raw in resp:
                line = raw.strip()
                if not line:
                    continue
                msg = json.loads(line)
                if "progress" in msg:
                    workflow_id = msg["progress"].get("workflow_id") or workflow_id
                    self._progress(msg["progress"])
                elif "result" in msg:
                    self._print_result(name, msg["result"])
                    return EXIT_OK
                elif "error" in msg:
                    self._print_error(msg["error"], msg.get("status"))
                    return EXIT_FAILED
        except (OSError, ValueError) as e:
            print(f"orchestrator ctl: lost the connection to {self.server}: {e}", file=sys.stderr)
        else:
            print(f"orchestrator ctl: {self.server} closed the stream before the result",
                  file=sys.stderr)  # fmt: skip
        if workflow_id:
            print(f"  the workflow may still be running: GET {self.server}/api/v1/workflows/"
                  f"{workflow_id}", file=sys.stderr)  # fmt: skip
        return EXIT_UNREACHABLE

    def _print_result(self, name: str, result: Any) -> None:
        if self.fmt == "table":
            from orchestrator.tables import render

            text = render(name, result)
            if text is not None:
                print(text)
                return
        print(json.dumps(result, indent=2, sort_keys=True))
        if isinstance(result, dict) and isinstance(result.get("summary"), str) and not self.quiet:
            print(result["summary"], file=sys.stderr)

    def _progress(self, ev: dict[str, Any]) -> None:
        if self.quiet:
            return
        head = f"[{ev.get('action', '')} {ev.get('workflow_id', '')}]"
        kind = ev.get("event")
        if kind == "waiting":
            text = str(ev.get("detail", "waiting"))
        elif kind == "step":
            text = f"{ev.get('step')}: {ev.get('status')}"
            if ev.get("ms") is not None:
                text += f" ({ev['ms']} ms)"
            if ev.get("detail"):
                text += f" - {ev['detail']}"
        elif kind == "finished":
            text = f"finished: {ev.get('status')} in {ev.get('ms')} ms"
            if ev.get("error"):
                text += f" - {ev['error']}"
        elif kind == "started":
            text = "started"
        else:
            text = json.dumps(ev, sort_keys=True)
        print(f"{head} {text}", file=sys.stderr, flush=True)

    def _print_error(self, err: dict[str, Any], status: Any) -> None:
        code = err.get("code", "ERROR")
        print(f"error: {code}: {err.get('message', '')}", file=sys.stderr)
        hint = _HINTS.get(code)
        if hint:
            print(f"  hint: {hint}", file=sys.stderr)
        details = err.get("details")
        if details:
            print(f"  details: {json.dumps(details, sort_keys=True)}", file=sys.stderr)
        if status is not None:
            print(f"  (HTTP {status})", file=sys.stderr)
