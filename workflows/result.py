"""What a reparent workflow returns (and stores as its workflow record's result)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class ReparentResult:
    workflow_id: str
    action: str
    keyspace: str
    shard: str
    new_primary: str | None
    old_primary: str | None
    # False when the shard already was as asked (PRS to the current primary, avoid_primary on a
    # tablet that is not the primary): a success with nothing changed.
    changed: bool
    position: str = ""
    journal_time_ns: int = 0
    duration_ms: float = 0.0
    # Old primary read-only -> new primary writable (PRS), or start -> promoted (ERS).
    write_unavailable_ms: float | None = None
    warnings: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["warnings"] = list(self.warnings)
        return d
