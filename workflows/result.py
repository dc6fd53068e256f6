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
    # ERS: when the health checks last saw the old primary answer (epoch seconds), and the
    # window from then to the promotion: how long the shard really had no primary.
    primary_last_healthy_at: float | None = None
    unavailable_window_ms: float | None = None

    @property
    def noop(self) -> bool:
        return not self.changed

    @property
    def summary(self) -> str:
        """One sentence for a person: what changed, or that nothing did and why."""
        if not self.changed:
            why = f": {self.warnings[0]}" if self.warnings else ""
            return f"no-op: nothing changed, {self.new_primary} stays the primary{why}"
        text = f"{self.new_primary} is the new primary of {self.keyspace}/{self.shard}"
        if self.old_primary and self.old_primary != self.new_primary:
            text += f" (was {self.old_primary})"
        if self.unavailable_window_ms is not None:
            text += (f"; no primary for {self.unavailable_window_ms / 1000:.1f}s since its last "
                     "healthy check")  # fmt: skip
        elif self.write_unavailable_ms is not None:
            text += f"; writes unavailable for {self.write_unavailable_ms:.0f} ms"
        return text

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["warnings"] = list(self.warnings)
        d["noop"] = self.noop
        d["summary"] = self.summary
        return d
