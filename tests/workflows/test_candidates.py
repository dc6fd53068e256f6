"""Candidate choice for PRS and ERS as pure logic: positions in, decision out, no server."""

from __future__ import annotations

import pytest

from mysqlctl.gtid import MariadbGtidSet, Position
from topo.records import TabletType
from workflows.candidates import Candidate, ErsChoice, choose_ers_elect, choose_prs_elect
from workflows.errors import InvalidArgumentError, PreconditionError

REPLICA = TabletType.REPLICA
RDONLY = TabletType.RDONLY
SPARE = TabletType.SPARE


def pos(text: str) -> Position:
    return MariadbGtidSet.parse(text)


def cand(
    alias: str,
    position: str | None,
    *,
    type: TabletType = REPLICA,
    errant: str = "",
    lag: float | None = 0,
) -> Candidate:
    """A candidate in the cell its alias names (`zone2-102` is in zone2)."""
    return Candidate(
        alias=alias,
        cell=alias.split("-")[0],
        type=type,
        position=pos(position) if position is not None else None,
        errant=pos(errant),
        lag_seconds=lag,
    )


# -- PRS ---------------------------------------------------------------------------------------


def test_prs_named_elect_is_returned_even_if_behind() -> None:
    # PRS lets a named elect catch up with the live primary, so being behind is fine.
    replicas = [cand("zone1-102", "0-101-3"), cand("zone1-103", "0-101-9")]
    assert choose_prs_elect("zone1", replicas, new_primary="zone1-102") == "zone1-102"


def test_prs_named_elect_that_is_not_in_the_shard_is_an_invalid_argument() -> None:
    with pytest.raises(InvalidArgumentError, match="zone1-999"):
        choose_prs_elect("zone1", [cand("zone1-102", "0-101-3")], new_primary="zone1-999")


@pytest.mark.parametrize(
    ("candidate", "reason"),
    [
        (cand("zone1-102", "0-101-3", type=RDONLY), "rdonly"),
        (cand("zone1-102", "0-101-3", type=SPARE), "spare"),
        (cand("zone1-102", None), "did not answer"),
        (cand("zone1-102", "0-101-3", errant="0-102-4"), "errant"),
    ],
)
def test_prs_named_elect_must_be_a_healthy_clean_replica(candidate: Candidate, reason: str) -> None:
    with pytest.raises(PreconditionError, match=reason) as e:
        choose_prs_elect("zone1", [candidate], new_primary="zone1-102")
    assert e.value.tablet == "zone1-102"


def test_prs_named_elect_in_another_cell_needs_allow_cross_cell() -> None:
    replicas = [cand("zone2-102", "0-101-3")]
    with pytest.raises(PreconditionError, match="cross-cell"):
        choose_prs_elect("zone1", replicas, new_primary="zone2-102")
    assert (
        choose_prs_elect("zone1", replicas, new_primary="zone2-102", allow_cross_cell=True)
        == "zone2-102"
    )


def test_prs_without_target_picks_the_most_advanced_replica_in_the_primarys_cell() -> None:
    replicas = [
        cand("zone1-102", "0-101-5"),
        cand("zone1-103", "0-101-7"),
        cand("zone2-104", "0-101-9"),  # more advanced, but in another cell
        cand("zone1-105", "0-101-9", type=RDONLY),  # more advanced, but not promotable
    ]
    assert choose_prs_elect("zone1", replicas) == "zone1-103"
    assert choose_prs_elect("zone1", replicas, allow_cross_cell=True) == "zone2-104"


def test_prs_without_target_skips_unreachable_errant_and_avoided_tablets() -> None:
    replicas = [
        cand("zone1-102", None),
        cand("zone1-103", "0-101-9", errant="0-103-10"),
        cand("zone1-104", "0-101-8"),
        cand("zone1-105", "0-101-4"),
    ]
    assert choose_prs_elect("zone1", replicas) == "zone1-104"
    assert choose_prs_elect("zone1", replicas, avoid_primary="zone1-104") == "zone1-105"


def test_prs_ties_go_to_the_least_lag_then_the_lowest_alias() -> None:
    replicas = [
        cand("zone1-104", "0-101-9", lag=0),
        cand("zone1-103", "0-101-9", lag=2),
        cand("zone1-102", "0-101-9", lag=None),  # unknown lag sorts last
    ]
    assert choose_prs_elect("zone1", replicas) == "zone1-104"
    same_lag = [cand("zone1-104", "0-101-9"), cand("zone1-103", "0-101-9")]
    assert choose_prs_elect("zone1", same_lag) == "zone1-103"


def test_prs_without_any_eligible_replica_is_refused() -> None:
    replicas = [cand("zone2-102", "0-101-9"), cand("zone1-103", "0-101-9", type=RDONLY)]
    with pytest.raises(PreconditionError, match="in cell zone1"):
        choose_prs_elect("zone1", replicas)
    with pytest.raises(PreconditionError):
        choose_prs_elect("zone1", [])


# -- ERS ---------------------------------------------------------------------------------------


def test_ers_picks_the_most_advanced_candidate() -> None:
    cands = [
        cand("zone1-102", "0-101-7"),
        cand("zone1-103", "0-101-9"),
        cand("zone1-104", "0-101-8"),
    ]
    assert choose_ers_elect(cands, old_primary_cell="zone1") == ErsChoice(
        "zone1-103", "zone1-103", needs_catch_up=False
    )


def test_ers_ties_prefer_the_old_primarys_cell_then_the_lowest_alias() -> None:
    cands = [
        cand("zone2-102", "0-101-9"),
        cand("zone1-104", "0-101-9"),
        cand("zone1-103", "0-101-9"),
    ]
    assert choose_ers_elect(cands, old_primary_cell="zone1").elect == "zone1-103"
    assert choose_ers_elect(cands, old_primary_cell="zone2").elect == "zone2-102"
    assert choose_ers_elect(cands, old_primary_cell=None).elect == "zone1-103"


def test_ers_never_picks_a_candidate_with_errant_transactions() -> None:
    # zone1-102 looks the most advanced only because of its own local writes.
    cands = [
        cand("zone1-102", "0-101-9", errant="1-102-1"),
        cand("zone1-103", "0-101-9"),
    ]
    assert choose_ers_elect(cands, old_primary_cell="zone1").elect == "zone1-103"
    with pytest.raises(PreconditionError, match="errant") as e:
        choose_ers_elect(cands, old_primary_cell="zone1", new_primary="zone1-102")
    assert e.value.tablet == "zone1-102"


def test_ers_with_only_errant_or_unreachable_candidates_is_refused() -> None:
    cands = [cand("zone1-102", "0-101-9", errant="0-102-10"), cand("zone1-103", None)]
    with pytest.raises(PreconditionError, match="no reachable tablet"):
        choose_ers_elect(cands, old_primary_cell="zone1")


def test_ers_refuses_when_reachable_tablets_have_diverged() -> None:
    # Same sequence number from two servers: two histories, neither contains the other.
    cands = [cand("zone1-102", "0-101-9"), cand("zone1-103", "0-102-9")]
    with pytest.raises(PreconditionError, match="diverged"):
        choose_ers_elect(cands, old_primary_cell="zone1")


def test_ers_named_elect_that_is_behind_catches_up_from_the_most_advanced() -> None:
    cands = [cand("zone1-102", "0-101-5"), cand("zone1-103", "0-101-9")]
    choice = choose_ers_elect(cands, old_primary_cell="zone1", new_primary="zone1-102")
    assert choice == ErsChoice("zone1-102", "zone1-103", needs_catch_up=True)
    at_top = choose_ers_elect(cands, old_primary_cell="zone1", new_primary="zone1-103")
    assert at_top == ErsChoice("zone1-103", "zone1-103", needs_catch_up=False)


@pytest.mark.parametrize(
    ("cands", "match"),
    [
        ([cand("zone1-103", "0-101-9")], "not a reachable"),
        ([cand("zone1-102", "0-101-9", type=RDONLY), cand("zone1-103", "0-101-9")], "rdonly"),
        ([cand("zone1-102", None), cand("zone1-103", "0-101-9")], "did not answer"),
    ],
)
def test_ers_named_elect_must_be_a_reachable_replica(cands: list[Candidate], match: str) -> None:
    with pytest.raises(PreconditionError, match=match):
        choose_ers_elect(cands, old_primary_cell="zone1", new_primary="zone1-102")


def test_ers_prevent_cross_cell_keeps_the_primary_in_its_cell() -> None:
    cands = [cand("zone2-102", "0-101-9"), cand("zone1-103", "0-101-6")]
    assert choose_ers_elect(cands, old_primary_cell="zone1").elect == "zone2-102"
    choice = choose_ers_elect(cands, old_primary_cell="zone1", prevent_cross_cell=True)
    assert choice == ErsChoice("zone1-103", "zone2-102", needs_catch_up=True)
    with pytest.raises(PreconditionError, match="cross-cell"):
        choose_ers_elect(
            cands, old_primary_cell="zone1", new_primary="zone2-102", prevent_cross_cell=True
        )
    with pytest.raises(PreconditionError, match="in cell zone1"):
        choose_ers_elect(
            [cand("zone2-102", "0-101-9")], old_primary_cell="zone1", prevent_cross_cell=True
        )


def test_ers_when_only_a_non_promotable_tablet_is_most_advanced_the_best_replica_catches_up() -> (
    None
):
    cands = [
        cand("zone1-102", "0-101-9", type=RDONLY),
        cand("zone1-103", "0-101-6"),
        cand("zone1-104", "0-101-7"),
    ]
    choice = choose_ers_elect(cands, old_primary_cell="zone1")
    assert choice == ErsChoice("zone1-104", "zone1-102", needs_catch_up=True)


def test_ers_with_only_non_promotable_candidates_is_refused_naming_them() -> None:
    cands = [cand("zone1-102", "0-101-9", type=RDONLY), cand("zone1-103", "0-101-9", type=RDONLY)]
    with pytest.raises(PreconditionError, match=r"zone1-102 \(rdonly\), zone1-103 \(rdonly\)"):
        choose_ers_elect(cands, old_primary_cell="zone1")


def test_ers_ignores_unreachable_candidates_when_finding_the_most_advanced() -> None:
    cands = [cand("zone1-102", None), cand("zone1-103", "0-101-4")]
    assert choose_ers_elect(cands, old_primary_cell="zone1").elect == "zone1-103"


def test_ers_works_across_several_replication_domains() -> None:
    # Contains means: at least as far in every domain; otherwise the histories diverged.
    cands = [cand("zone1-102", "0-101-9,1-101-3"), cand("zone1-103", "0-101-8,1-101-3")]
    assert choose_ers_elect(cands, old_primary_cell="zone1").elect == "zone1-102"
    diverged = [cand("zone1-102", "0-101-9,1-101-2"), cand("zone1-103", "0-101-8,1-101-3")]
    with pytest.raises(PreconditionError, match="diverged"):
        choose_ers_elect(diverged, old_primary_cell="zone1")
