"""Shared fixtures: real etcd and real MariaDB servers on loopback, started by our own launcher.

Fixture modules are split by the server they start so that each stays small; they are loaded
here as plugins.
"""

pytest_plugins = [
    "tests.fixtures_etcd",
    "tests.fixtures_mysql",
    "tests.fixtures_cluster",
    "tests.fixtures_service",
]


def pytest_configure() -> None:
    from orchestrator.logs import configure_logging

    configure_logging(json=False, level="info")
