"""Choosing the new primary: pure logic, positions in, decision out (no server needed to test).

PRS: the primary is alive, so every replica can catch up with it; prefer the most advanced
healthy `replica` in the primary's cell (cross-cell only when allowed), least lag next, alias
order last, so the choice is deterministic.

ERS: the primary is gone, so the new primary must already hold every transaction any reachable
tablet holds. The most advanced position (one that contains all the others) is found among all
reachable tablets; a promotable candidate at that position is preferred; a promotable candidate
that is behind may still be chosen (when named, or when only a non-promotable tablet is most
advanced) and then catches up from the most advanced tablet before promotion. A tablet with
errant transactions (writes that did not come from the primary) is never chosen, and if the
reachable tablets hold positions that diverge (neither contains the other), nothing is chosen.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from mysqlctl.gtid import Position, most_advanced
from topo.records import PROMOTABLE_TYPES, TabletType
from workflows.errors import InvalidArgumentError, PreconditionError


@dataclass(frozen=True)
class Candidate:
    """What candidate choice needs to know about one tablet."""

    alias: str
    cell: str
    type: TabletType
    position: Position | None  # applied position; None when unreachable
    errant: Position | None = None
    lag_seconds: float | None = None

    @property
    def reachable(self) -> bool:
        return self.position is not None

    @property
    def has_errant(self) -> bool:
        return self.errant is not None and not self.errant.is_empty()


@dataclass(frozen=True)
class ErsChoice:
    elect: str
    most_advanced: str  # a tablet holding the most advanced position (catch-up source)
    needs_catch_up: bool


def _sort_key(c: Candidate) -> tuple[float, str]:
    return (c.lag_seconds if c.lag_seconds is not None else float("inf"), c.alias)


def _by_alias(cands: Iterable[Candidate]) -> dict[str, Candidate]:
    return {c.alias: c for c in cands}


def choose_prs_elect(
    primary_cell: str,
    replicas: Sequence[Candidate],
    *,
    new_primary: str | None = None,
    avoid_primary: str | None = None,
    allow_cross_cell: bool = False,
) -> str:
    """The tablet PRS should promote; raises PreconditionError when none qualifies."""
    by_alias = _by_alias(replicas)
    if new_primary is not None:
        c = by_alias.get(new_primary)
        if c is None:
            raise InvalidArgumentError(
                f"{new_primary} is not a tablet of this shard", tablet=new_primary
            )
        _check_promotable(c)
        if c.cell != primary_cell and not allow_cross_cell:
            raise PreconditionError(
                f"{c.alias} is in cell {c.cell}, the primary is in {primary_cell}: "
                "cross-cell promotion needs allow_cross_cell_promotion",
                tablet=c.alias,
            )
        return c.alias
    eligible = [
        c
        for c in replicas
        if c.type in PROMOTABLE_TYPES
        and c.reachable
        and not c.has_errant
        and c.alias != avoid_primary
        and (allow_cross_cell or c.cell == primary_cell)
    ]
    if not eligible:
        where = "in any cell" if allow_cross_cell else f"in cell {primary_cell}"
        raise PreconditionError(f"no healthy replica {where} can be promoted")
    positions = {c.alias: c.position for c in eligible if c.position is not None}
    best = set(most_advanced(positions))
    return min((c for c in eligible if c.alias in best), key=_sort_key).alias


def _check_promotable(c: Candidate) -> None:
    if c.type not in PROMOTABLE_TYPES:
        raise PreconditionError(
            f"{c.alias} is a {c.type.value} tablet; only replica tablets can be promoted",
            tablet=c.alias,
        )
    if not c.reachable:
        raise PreconditionError(f"{c.alias} did not answer", tablet=c.alias)
    if c.has_errant:
        raise PreconditionError(
            f"{c.alias} has errant transactions {c.errant} that the shard never had",
            tablet=c.alias,
        )


def choose_ers_elect(
    candidates: Sequence[Candidate],
    *,
    old_primary_cell: str | None,
    new_primary: str | None = None,
    prevent_cross_cell: bool = False,
) -> ErsChoice:
    """The tablet ERS should promote (and from where it must catch up first, if anywhere).

    `candidates` are the reachable tablets that are not ignored, old primary excluded.
    """
    clean = [c for c in candidates if c.reachable and not c.has_errant]
    if not clean:
        raise PreconditionError("no reachable tablet without errant transactions")
    positions = {c.alias: c.position for c in clean if c.position is not None}
    leaders = most_advanced(positions)
    lead_positions = {positions[a] for a in leaders}
    if len(lead_positions) > 1:
        raise PreconditionError(
            "reachable tablets have diverged (none contains all transactions): "
            + ", ".join(f"{a}={positions[a]}" for a in leaders)
        )
    top = positions[leaders[0]]
    by_alias = _by_alias(candidates)

    def cell_ok(c: Candidate) -> bool:
        return not prevent_cross_cell or old_primary_cell is None or c.cell == old_primary_cell

    if new_primary is not None:
        c = by_alias.get(new_primary)
        if c is None:
            raise PreconditionError(
                f"{new_primary} is not a reachable, non-ignored tablet of this shard",
                tablet=new_primary,
            )
        _check_promotable(c)
        if not cell_ok(c):
            raise PreconditionError(
                f"{c.alias} is in cell {c.cell}, the old primary was in {old_primary_cell}, "
                "and cross-cell promotion is prevented",
                tablet=c.alias,
            )
        caught_up = c.position is not None and c.position.contains(top)
        return ErsChoice(c.alias, leaders[0], needs_catch_up=not caught_up)

    promotable = [c for c in clean if c.type in PROMOTABLE_TYPES and cell_ok(c)]
    if not promotable:
        where = f" in cell {old_primary_cell}" if prevent_cross_cell and old_primary_cell else ""
        raise PreconditionError(
            f"no promotable candidate{where}: the reachable tablets are "
            + (", ".join(f"{c.alias} ({c.type.value})" for c in candidates) or "none")
        )
    at_top = [c for c in promotable if c.position is not None and c.position.contains(top)]
    if at_top:
        best = min(at_top, key=lambda c: (c.cell != old_primary_cell, c.alias))
        return ErsChoice(best.alias, best.alias, needs_catch_up=False)
    # Only a non-promotable tablet holds everything: promote the most advanced promotable one
    # after it has caught up from that tablet.
    sub = {c.alias: c.position for c in promotable if c.position is not None}
    best_alias = min(most_advanced(sub), key=lambda a: (by_alias[a].cell != old_primary_cell, a))
    return ErsChoice(best_alias, leaders[0], needs_catch_up=True)
