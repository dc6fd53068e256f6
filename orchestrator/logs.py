"""Logging set-up: structlog to stderr (stdout is for command results), JSON in the service."""

from __future__ import annotations

import logging
import sys

import structlog


def configure_logging(*, json: bool = True, level: str = "info") -> None:
    """Configure structlog once per process. Context (keyspace, shard, workflow id) is bound
    with `structlog.contextvars`, so every line of a workflow carries it."""
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
        ),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=False,
    )
