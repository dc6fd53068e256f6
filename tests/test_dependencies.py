"""Dependencies point one way: orchestrator -> (workflows, migration) -> (topo, mysqlctl), and
`orchestrator/api/` is imported by nothing but the service that serves it."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _imports(path: Path) -> set[str]:
    """Every module a file imports (at any depth, lazy imports in functions included)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
    return out


def _files(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def _offenders(package: str, forbidden: tuple[str, ...]) -> list[str]:
    return [
        f"{p.relative_to(ROOT)} imports {m}"
        for p in _files(package)
        for m in sorted(_imports(p))
        if any(m == f or m.startswith(f + ".") for f in forbidden)
    ]


def test_only_the_service_imports_the_http_api() -> None:
    allowed = {ROOT / "orchestrator" / "service.py"}
    api = ROOT / "orchestrator" / "api"
    offenders = [
        o
        for o in _offenders("orchestrator", ("orchestrator.api",))
        if not (ROOT / o.split(" ")[0]).is_relative_to(api)
        and ROOT / o.split(" ")[0] not in allowed
    ]
    assert offenders == []


def test_topo_and_mysqlctl_import_no_other_package() -> None:
    others = ("orchestrator", "workflows", "migration")
    assert _offenders("topo", (*others, "mysqlctl")) == []
    assert _offenders("mysqlctl", (*others, "topo")) == []


def test_workflows_and_migration_do_not_import_the_service_or_each_other() -> None:
    assert _offenders("workflows", ("orchestrator", "migration")) == []
    assert _offenders("migration", ("orchestrator", "workflows")) == []
