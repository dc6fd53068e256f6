"""Unit tests of which tablet a shard source is read from (migration/sources.py
`choose_tablet`). Pure logic: Tablet records built directly, no topology server."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from migration.sources import SourceServer, choose_tablet
from topo.records import Tablet, TabletType

PRIMARY = "zone1-100"


def tablet(alias: str, kind: TabletType) -> Tablet:
    uid = int(alias.rsplit("-", 1)[1])
    return Tablet(alias=alias, keyspace="commerce", shard="-80", type=kind,
                  mysql_host="127.0.0.1", mysql_port=10000 + uid)  # fmt: skip


def shard(*extra: Tablet) -> list[Tablet]:
    return [
        tablet(PRIMARY, TabletType.PRIMARY),
        tablet("zone1-101", TabletType.REPLICA),
        tablet("zone1-102", TabletType.REPLICA),
        tablet("zone1-103", TabletType.RDONLY),
        *extra,
    ]


def choose(
    tablets: list[Tablet],
    types: tuple[str, ...] = ("replica", "primary"),
    current: str | None = None,
    avoid: tuple[str, ...] = (),
    primary: str | None = PRIMARY,
) -> str | None:
    t = choose_tablet(tablets, primary, types, current, avoid)
    return t.alias if t else None


def test_default_types_read_from_a_replica() -> None:
    assert choose(shard()) == "zone1-101"


def test_first_listed_type_that_has_a_tablet_wins() -> None:
    assert choose(shard(), ("rdonly", "replica", "primary")) == "zone1-103"
    assert choose(shard(), ("primary", "replica")) == PRIMARY


def test_later_types_are_used_when_earlier_ones_have_no_tablet() -> None:
    only_primary = [tablet(PRIMARY, TabletType.PRIMARY), tablet("zone1-104", TabletType.SPARE)]
    assert choose(only_primary) == PRIMARY
    assert choose(only_primary, ("replica", "rdonly")) is None


def test_current_tablet_is_kept_among_equals() -> None:
    assert choose(shard(), current="zone1-102") == "zone1-102"


def test_current_tablet_of_a_later_type_loses_to_an_earlier_type() -> None:
    assert choose(shard(), current=PRIMARY) == "zone1-101"


def test_current_tablet_no_longer_in_the_shard_is_not_chosen() -> None:
    assert choose(shard(), current="zone1-999") == "zone1-101"


def test_avoided_tablets_are_tried_last() -> None:
    assert choose(shard(), avoid=("zone1-101",)) == "zone1-102"
    assert choose(shard(), avoid=("zone1-101",), current="zone1-101") == "zone1-102"


def test_avoided_tablet_is_still_chosen_when_it_is_the_only_one_of_its_type() -> None:
    tablets = [tablet(PRIMARY, TabletType.PRIMARY), tablet("zone1-101", TabletType.REPLICA)]
    assert choose(tablets, avoid=("zone1-101",)) == "zone1-101"


def test_avoid_does_not_fall_through_to_a_later_type() -> None:
    tablets = [tablet(PRIMARY, TabletType.PRIMARY), tablet("zone1-101", TabletType.REPLICA)]
    assert choose(tablets, avoid=("zone1-101", PRIMARY)) == "zone1-101"


def test_primary_typed_tablet_that_is_not_the_shards_primary_never_counts() -> None:
    # The old primary after a reparent, not yet demoted in its record.
    stale = tablet("zone1-105", TabletType.PRIMARY)
    tablets = [stale, tablet("zone1-101", TabletType.REPLICA)]
    assert choose(tablets, ("primary",), primary="zone1-101") is None
    assert choose(tablets, ("primary", "replica"), primary=PRIMARY) == "zone1-101"


def test_shards_primary_only_counts_when_typed_primary() -> None:
    # The shard record names the primary-elect, whose tablet record still says replica.
    tablets = [tablet("zone1-101", TabletType.REPLICA), tablet("zone1-102", TabletType.REPLICA)]
    assert choose(tablets, ("primary",), primary="zone1-101") is None
    assert choose(tablets, ("replica",), primary="zone1-101") == "zone1-102"


def test_no_shard_primary_means_no_primary_tablet() -> None:
    assert choose(shard(), ("primary",), primary=None) is None


@pytest.mark.parametrize("kind", [TabletType.SPARE, TabletType.DRAINED])
def test_spare_and_drained_tablets_are_never_chosen(kind: TabletType) -> None:
    tablets = [tablet("zone1-110", kind), tablet("zone1-111", kind)]
    assert choose(tablets, ("replica", "rdonly", "primary"), primary=None) is None
    assert choose(tablets, ("replica", "rdonly", "primary"), current="zone1-110") is None


def test_ties_are_broken_by_alias_order_not_list_order() -> None:
    tablets = [tablet("zone1-120", TabletType.REPLICA), tablet("zone1-20", TabletType.REPLICA)]
    assert choose(tablets) == "zone1-20"


def test_no_tablets_no_choice() -> None:
    assert choose([]) is None


def test_source_server_describes_a_tablet_and_an_address() -> None:
    s = SourceServer("commerce/-80", "127.0.0.1", 10101, "zone1-101", "replica")
    assert s.address == "127.0.0.1:10101"
    assert s.describe() == "zone1-101 (replica, 127.0.0.1:10101)"
    assert SourceServer("legacy", "h", 1).describe() == "h:1"


_kinds = st.sampled_from(list(TabletType))


@settings(max_examples=200, deadline=None)
@given(
    kinds=st.lists(_kinds, min_size=0, max_size=6),
    types=st.lists(st.sampled_from(["replica", "rdonly", "primary"]), min_size=1, max_size=3,
                   unique=True),
    current=st.integers(min_value=0, max_value=6),
    avoid=st.sets(st.integers(min_value=0, max_value=6)),
    primary=st.integers(min_value=0, max_value=6),
)  # fmt: skip
def test_choice_is_of_the_first_wanted_type_available_and_never_spare_or_drained(
    kinds: list[TabletType], types: list[str], current: int, avoid: set[int], primary: int
) -> None:
    tablets = [tablet(f"zone1-{i}", k) for i, k in enumerate(kinds)]
    primary_alias = f"zone1-{primary}"
    chosen = choose_tablet(
        tablets, primary_alias, tuple(types), f"zone1-{current}", {f"zone1-{a}" for a in avoid}
    )

    def kind(t: Tablet) -> str | None:
        if t.alias == primary_alias:
            return "primary" if t.type == TabletType.PRIMARY else None
        return t.type.value if t.type in (TabletType.REPLICA, TabletType.RDONLY) else None

    available = [w for w in types if any(kind(t) == w for t in tablets)]
    if not available:
        assert chosen is None
        return
    assert chosen is not None
    assert chosen.type not in (TabletType.SPARE, TabletType.DRAINED)
    assert kind(chosen) == available[0]
    peers = [t for t in tablets if kind(t) == available[0]]
    fresh = [t for t in peers if t.alias not in {f"zone1-{a}" for a in avoid}]
    if fresh:
        assert chosen in fresh
        if any(t.alias == f"zone1-{current}" for t in fresh):
            assert chosen.alias == f"zone1-{current}"
