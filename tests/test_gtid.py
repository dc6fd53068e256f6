"""Unit tests of GTID positions: parsing, printing, set algebra and the reparent decisions built
on it. Pure logic, no server: concrete cases first, then hypothesis properties checked against a
plain Python set model."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mysqlctl.gtid import (
    GtidParseError,
    MariadbGtid,
    MariadbGtidSet,
    MysqlGtidSet,
    MysqlSource,
    Position,
    compare,
    find_errant,
    most_advanced,
    parse_position,
)

U1 = "3e11fa47-71ca-11e1-9e33-c80aa9429562"
U2 = "4f22ab58-82db-22f2-af44-d91bba53a673"
U3 = "00000000-0000-0000-0000-000000000001"


def maria(text: str) -> MariadbGtidSet:
    return MariadbGtidSet.parse(text)


def my(text: str) -> MysqlGtidSet:
    return MysqlGtidSet.parse(text)


# --------------------------------------------------------------------------------------------
# MariaDB parsing and printing


def test_mariadb_parse_sorts_domains_and_prints_with_prefix() -> None:
    pos = maria("1-102-7,0-101-42")
    assert pos.encode() == "MariaDB/0-101-42,1-102-7"
    assert str(pos) == pos.encode()
    assert pos.body() == "0-101-42,1-102-7"
    assert dict(pos.domains()) == {0: MariadbGtid(0, 101, 42), 1: MariadbGtid(1, 102, 7)}


def test_mariadb_parse_tolerates_whitespace_and_newlines() -> None:
    assert maria(" 0-101-42 ,\n 1-102-7\n") == maria("0-101-42,1-102-7")


def test_mariadb_empty_text_is_empty_position() -> None:
    for text in ("", "  ", "\n"):
        pos = maria(text)
        assert pos.is_empty()
        assert pos.encode() == "MariaDB/"
        assert pos == MariadbGtidSet()


def test_mariadb_accepts_full_unsigned_ranges() -> None:
    text = f"{2**32 - 1}-{2**32 - 1}-{2**64 - 1}"
    assert maria(text).body() == text


def test_mariadb_equal_positions_hash_alike() -> None:
    a = maria("0-101-42,1-102-7")
    b = maria("1-102-7,0-101-42")
    assert a == b
    assert hash(a) == hash(b)
    assert len({a, b}) == 1


def test_mariadb_position_is_immutable() -> None:
    pos = maria("0-1-1")
    with pytest.raises(AttributeError):
        pos.gtids = ()  # type: ignore[misc]


def test_mariadb_domains_view_is_read_only() -> None:
    domains = maria("0-1-1").domains()
    with pytest.raises(TypeError):
        domains[5] = MariadbGtid(5, 1, 1)  # type: ignore[index]


@pytest.mark.parametrize(
    ("text", "bad"),
    [
        ("0-101", "0-101"),
        ("0-101-42-1", "0-101-42-1"),
        ("0-101-x", "0-101-x"),
        ("-1-101-42", "-1-101-42"),
        ("+1-101-42", "+1-101-42"),
        ("0-1 01-42", "0-1 01-42"),
        ("0-101-42,", "0-101-42,"),
        ("0-101-42,,1-1-1", "0-101-42,,1-1-1"),
        ("0-101-42,0-102-43", "0-101-42,0-102-43"),
        (f"{2**32}-1-1", f"{2**32}-1-1"),
        (f"0-{2**32}-1", f"0-{2**32}-1"),
        (f"0-1-{2**64}", f"0-1-{2**64}"),
        ("0-1-" + "9" * 30, "9" * 30),
        ("abc", "abc"),
    ],
)
def test_mariadb_bad_input_is_rejected_naming_the_text(text: str, bad: str) -> None:
    with pytest.raises(GtidParseError) as info:
        maria(text)
    assert bad in str(info.value)
    assert isinstance(info.value, ValueError)


def test_mariadb_constructor_rejects_two_gtids_of_one_domain() -> None:
    with pytest.raises(ValueError, match="domain 0"):
        MariadbGtidSet((MariadbGtid(0, 1, 1), MariadbGtid(0, 2, 2)))


# --------------------------------------------------------------------------------------------
# MariaDB algebra


def test_mariadb_contains_compares_seq_per_domain() -> None:
    primary = maria("0-101-42,1-102-7")
    assert primary.contains(maria("0-101-40"))
    assert primary.contains(maria("0-101-42,1-102-7"))
    assert primary.contains(maria(""))
    assert not primary.contains(maria("0-101-43"))
    assert not primary.contains(maria("2-103-1"))
    assert not maria("").contains(primary)


def test_mariadb_contains_ignores_server_id_when_seq_is_higher() -> None:
    # After a reparent the domain continues under the new primary's server id.
    assert maria("0-102-50").contains(maria("0-101-42"))


def test_mariadb_same_seq_from_two_servers_is_a_conflict_not_equality() -> None:
    a, b = maria("0-101-42"), maria("0-102-42")
    assert not a.contains(b)
    assert not b.contains(a)
    assert compare(a, b) == "diverged"
    assert a.difference(b) == a


def test_mariadb_union_takes_the_later_gtid_per_domain() -> None:
    a = maria("0-101-42,1-102-7")
    b = maria("0-103-45,2-104-1")
    assert a.union(b) == maria("0-103-45,1-102-7,2-104-1")
    assert b.union(a) == a.union(b)


def test_mariadb_union_of_conflicting_seq_is_order_independent() -> None:
    a, b = maria("0-101-42"), maria("0-102-42")
    assert a.union(b) == b.union(a) == maria("0-102-42")


def test_mariadb_difference_keeps_domains_that_are_ahead_or_missing() -> None:
    replica = maria("0-101-42,1-102-9,2-103-5")
    primary = maria("0-101-42,1-102-7")
    assert replica.difference(primary) == maria("1-102-9,2-103-5")
    assert primary.difference(replica).is_empty()


def test_mariadb_intersection_takes_the_earlier_gtid_in_shared_domains() -> None:
    a = maria("0-101-42,1-102-7,3-1-1")
    b = maria("0-101-40,1-105-9,2-1-1,3-2-1")
    assert a.intersection(b) == maria("0-101-40,1-102-7")


def test_mariadb_errant_write_on_replica_is_found() -> None:
    # log_slave_updates: binlog_pos follows slave_pos until someone writes on the replica
    # directly; that write gets the replica's server id and appears only in binlog_pos.
    slave_pos = maria("0-101-42,1-101-7")
    assert find_errant(maria("0-101-42,1-101-7"), slave_pos).is_empty()
    errant = find_errant(maria("0-201-43,1-101-7"), slave_pos)
    assert errant == maria("0-201-43")
    assert find_errant(maria("0-101-42,1-101-7,5-201-1"), slave_pos) == maria("5-201-1")


# --------------------------------------------------------------------------------------------
# MySQL parsing and printing


def test_mysql_parse_normalises_case_order_and_overlaps() -> None:
    pos = my(f"{U2.upper()}:3,\n{U1}:7:1-5:6:10-12:11")
    assert pos.body() == f"{U1}:1-7:10-12,{U2}:3"
    assert pos.encode() == f"MySQL56/{U1}:1-7:10-12,{U2}:3"
    assert dict(pos.intervals()) == {
        MysqlSource(U1): ((1, 7), (10, 12)),
        MysqlSource(U2): ((3, 3),),
    }
    assert pos.count() == 11


def test_mysql_parse_merges_repeated_uuids() -> None:
    assert my(f"{U1}:1-3,{U1}:4-6,{U1}:9") == my(f"{U1}:1-6:9")


def test_mysql_empty_text_is_empty_set() -> None:
    for text in ("", " \n"):
        pos = my(text)
        assert pos.is_empty()
        assert pos.encode() == "MySQL56/"


def test_mysql_parse_accepts_tagged_gtids() -> None:
    pos = my(f"{U1}:TagB:5:1-3:taga:1,{U1}:2")
    assert pos.body() == f"{U1}:2:taga:1:tagb:1-3:5"
    assert dict(pos.intervals()) == {
        MysqlSource(U1): ((2, 2),),
        MysqlSource(U1, "taga"): ((1, 1),),
        MysqlSource(U1, "tagb"): ((1, 3), (5, 5)),
    }
    only_tagged = my(f"{U1}:x:1-2")
    assert only_tagged.body() == f"{U1}:x:1-2"
    assert parse_position(only_tagged.encode()) == only_tagged


def test_mysql_tags_are_separate_numbering() -> None:
    assert not my(f"{U1}:1-10").contains(my(f"{U1}:t:1"))


@pytest.mark.parametrize(
    ("text", "bad"),
    [
        ("3e11fa47-71ca-11e1-9e33-c80aa942956:1-5", "3e11fa47-71ca-11e1-9e33-c80aa942956"),
        ("3e11fa4771ca11e19e33c80aa9429562:1", "3e11fa4771ca11e19e33c80aa9429562"),
        ("zz11fa47-71ca-11e1-9e33-c80aa9429562:1", "zz11fa47-71ca-11e1-9e33-c80aa9429562"),
        (U1, U1),
        (f"{U1}:0", "'0'"),
        (f"{U1}:5-3", "5-3"),
        (f"{U1}:1-", "1-"),
        (f"{U1}:-3", "-3"),
        (f"{U1}:1-2-3", "1-2-3"),
        (f"{U1}:1 - 2", "1 - 2"),
        (f"{U1}:+1", "+1"),
        (f"{U1}:1:", f"{U1}:1:"),
        (f"{U1}:{2**63}", str(2**63)),
        (f"{U1}:1-{'9' * 30}", "9" * 30),
        (f"{U1}:tag", f"{U1}:tag"),
        (f"{U1}:tag:other:1", f"{U1}:tag:other:1"),
        (f"{U1}:{'t' * 33}:1", "t" * 33),
        (f"{U1}:1,,{U2}:2", f"{U1}:1,,{U2}:2"),
        (f"{U1}:1,", f"{U1}:1,"),
        ("0-101-42", "0-101-42"),
    ],
)
def test_mysql_bad_input_is_rejected_naming_the_text(text: str, bad: str) -> None:
    with pytest.raises(GtidParseError) as info:
        my(text)
    assert bad in str(info.value)


def test_mysql_constructor_rejects_bad_intervals_and_sources() -> None:
    with pytest.raises(ValueError, match="bad interval"):
        MysqlGtidSet.from_intervals({MysqlSource(U1): [(0, 3)]})
    with pytest.raises(ValueError, match="uuid"):
        MysqlSource(U1.upper())


# --------------------------------------------------------------------------------------------
# MySQL algebra


def test_mysql_contains_is_exact() -> None:
    executed = my(f"{U1}:1-10:12,{U2}:1-3")
    assert executed.contains(my(f"{U1}:2-5:12"))
    assert executed.contains(my(""))
    assert not executed.contains(my(f"{U1}:11"))
    assert not executed.contains(my(f"{U1}:10-12"))
    assert not executed.contains(my(f"{U3}:1"))


def test_mysql_union_merges_adjacent_intervals() -> None:
    assert my(f"{U1}:1-5").union(my(f"{U1}:6-8,{U2}:1")) == my(f"{U1}:1-8,{U2}:1")


def test_mysql_difference_cuts_holes() -> None:
    a = my(f"{U1}:1-20,{U2}:1-3")
    b = my(f"{U1}:3-5:8:15-30,{U2}:1-3")
    assert a.difference(b) == my(f"{U1}:1-2:6-7:9-14")


def test_mysql_intersection() -> None:
    a = my(f"{U1}:1-10:20-30,{U2}:1-3")
    b = my(f"{U1}:5-25,{U3}:1")
    assert a.intersection(b) == my(f"{U1}:5-10:20-25")


def test_mysql_errant_transactions_of_replica() -> None:
    primary = my(f"{U1}:1-100")
    replica = my(f"{U1}:1-90,{U2}:1-2")
    assert find_errant(replica, primary) == my(f"{U2}:1-2")
    assert find_errant(my(f"{U1}:1-90"), primary).is_empty()


# --------------------------------------------------------------------------------------------
# Prefixed positions, comparisons, decisions


@pytest.mark.parametrize(
    "text",
    ["MariaDB/0-101-42,1-102-7", "MariaDB/", f"MySQL56/{U1}:1-42:45,{U2}:1", "MySQL56/"],
)
def test_parse_position_round_trips_the_printed_form(text: str) -> None:
    pos = parse_position(text)
    assert pos.encode() == text
    assert parse_position(str(pos)) == pos


def test_parse_position_picks_the_flavor_from_the_prefix() -> None:
    assert isinstance(parse_position("MariaDB/0-1-2"), MariadbGtidSet)
    assert isinstance(parse_position(f"MySQL56/{U1}:1"), MysqlGtidSet)


@pytest.mark.parametrize(
    ("text", "bad"),
    [
        ("0-101-42", "0-101-42"),
        ("", "''"),
        ("Foo/0-1-2", "Foo"),
        ("FilePos/binlog.000001:4", "FilePos"),
        ("mariadb/0-1-2", "mariadb"),
        ("MariaDB/0-1", "0-1"),
        ("MariaDB/" + U1 + ":1", U1),
        ("MySQL56/0-101-42", "0-101-42"),
    ],
)
def test_parse_position_rejects_unknown_prefix_or_bad_body(text: str, bad: str) -> None:
    with pytest.raises(GtidParseError) as info:
        parse_position(text)
    assert bad in str(info.value)


def test_flavors_do_not_mix() -> None:
    a, b = maria("0-1-1"), my(f"{U1}:1")
    with pytest.raises(TypeError):
        a.contains(b)
    with pytest.raises(TypeError):
        b.union(a)
    with pytest.raises(TypeError):
        a.difference(b)
    with pytest.raises(TypeError):
        compare(a, b)
    assert a != b


def test_positions_have_no_order() -> None:
    with pytest.raises(TypeError):
        _ = maria("0-1-1") < maria("0-1-2")  # type: ignore[operator]


def test_compare() -> None:
    assert compare(maria("0-1-5"), maria("0-1-5")) == "equal"
    assert compare(maria("0-1-6"), maria("0-1-5")) == "ahead"
    assert compare(maria("0-1-5"), maria("0-1-6")) == "behind"
    assert compare(maria("0-1-6,1-1-1"), maria("0-1-7")) == "diverged"
    assert compare(my(f"{U1}:1-5"), my(f"{U1}:1-3")) == "ahead"
    assert compare(my(f"{U1}:1-3:5"), my(f"{U1}:1-4")) == "diverged"


def test_most_advanced_picks_the_position_containing_all_others() -> None:
    positions = {
        "zone1-101": maria("0-101-40"),
        "zone1-102": maria("0-101-42"),
        "zone1-103": maria("0-101-41"),
    }
    assert most_advanced(positions) == ["zone1-102"]


def test_most_advanced_returns_ties_in_mapping_order() -> None:
    positions = {
        "c": my(f"{U1}:1-10"),
        "a": my(f"{U1}:1-5"),
        "b": my(f"{U1}:1-10"),
    }
    assert most_advanced(positions) == ["c", "b"]


def test_most_advanced_returns_maximal_elements_when_diverged() -> None:
    positions = {
        "a": my(f"{U1}:1-10"),
        "b": my(f"{U1}:1-8,{U2}:1"),
        "c": my(f"{U1}:1-7"),
    }
    assert most_advanced(positions) == ["a", "b"]


def test_most_advanced_of_nothing_is_empty() -> None:
    assert most_advanced({}) == []


def test_most_advanced_of_one_is_that_one() -> None:
    assert most_advanced({7: maria("")}) == [7]


# --------------------------------------------------------------------------------------------
# Properties

SOURCES = [MysqlSource(U1), MysqlSource(U2), MysqlSource(U3), MysqlSource(U1, "t")]

intervals = st.tuples(st.integers(1, 25), st.integers(0, 6)).map(lambda p: (p[0], p[0] + p[1]))
mysql_sets = st.dictionaries(st.sampled_from(SOURCES), st.lists(intervals, max_size=4)).map(
    MysqlGtidSet.from_intervals
)


def _gtid(domain: int, server_id: int, seq: int) -> MariadbGtid:
    return MariadbGtid(domain, server_id, seq)


# Any GTIDs, including the same seq from two servers (conflicting histories).
mariadb_sets = st.dictionaries(
    st.integers(0, 3), st.tuples(st.integers(1, 2), st.integers(0, 8)), max_size=4
).map(lambda d: MariadbGtidSet.from_gtids(_gtid(k, s, q) for k, (s, q) in d.items()))

# GTIDs from one consistent history: the seq of a domain decides which server wrote it.
mariadb_history_sets = st.dictionaries(st.integers(0, 3), st.integers(0, 8), max_size=4).map(
    lambda d: MariadbGtidSet.from_gtids(_gtid(k, 100 + (k + q) % 3, q) for k, q in d.items())
)

any_flavor_pairs = st.one_of(
    st.tuples(mysql_sets, mysql_sets, mysql_sets),
    st.tuples(mariadb_sets, mariadb_sets, mariadb_sets),
)
consistent_triples = st.one_of(
    st.tuples(mysql_sets, mysql_sets, mysql_sets),
    st.tuples(mariadb_history_sets, mariadb_history_sets, mariadb_history_sets),
)


def model(pos: MysqlGtidSet) -> frozenset[tuple[MysqlSource, int]]:
    """The set of individual transactions, to check the interval arithmetic against."""
    return frozenset(
        (source, n)
        for source, ranges in pos.intervals().items()
        for first, last in ranges
        for n in range(first, last + 1)
    )


@given(any_flavor_pairs)
def test_prop_encode_then_parse_is_identity(abc: tuple[Position, Position, Position]) -> None:
    for pos in abc:
        assert parse_position(pos.encode()) == pos
        assert parse_position(pos.encode()).encode() == pos.encode()
        assert type(pos).parse(pos.body()) == pos  # type: ignore[attr-defined]


@given(any_flavor_pairs)
def test_prop_union_is_commutative_associative_idempotent(
    abc: tuple[Position, Position, Position],
) -> None:
    a, b, c = abc
    assert a.union(b) == b.union(a)
    assert a.union(b).union(c) == a.union(b.union(c))
    assert a.union(a) == a


@given(consistent_triples)
def test_prop_union_contains_both_operands(abc: tuple[Position, Position, Position]) -> None:
    a, b, _ = abc
    assert a.union(b).contains(a)
    assert a.union(b).contains(b)


@given(any_flavor_pairs)
def test_prop_containment_and_difference(abc: tuple[Position, Position, Position]) -> None:
    a, b, _ = abc
    assert a.contains(a)
    assert a.contains(a.difference(b))
    assert a.difference(a).is_empty()
    assert a.difference(b).is_empty() == b.contains(a)
    assert a.contains(a.intersection(b))
    assert b.contains(a.intersection(b))
    assert a.difference(b).union(a.intersection(b)) == a
    if a.contains(b):
        assert a.union(b) == a
        assert a.intersection(b) == b


@given(any_flavor_pairs)
def test_prop_contains_is_transitive(abc: tuple[Position, Position, Position]) -> None:
    a, b, c = abc
    if a.contains(b) and b.contains(c):
        assert a.contains(c)


@given(any_flavor_pairs)
def test_prop_compare_agrees_with_contains(abc: tuple[Position, Position, Position]) -> None:
    a, b, _ = abc
    result = compare(a, b)
    assert (result == "equal") == (a == b)
    assert (result in ("equal", "ahead")) == a.contains(b)
    assert (result in ("equal", "behind")) == b.contains(a)
    mirror = {"equal": "equal", "ahead": "behind", "behind": "ahead", "diverged": "diverged"}
    assert compare(b, a) == mirror[result]


@given(mysql_sets, mysql_sets)
def test_prop_mysql_operations_match_a_set_model(a: MysqlGtidSet, b: MysqlGtidSet) -> None:
    assert model(a.union(b)) == model(a) | model(b)
    assert model(a.difference(b)) == model(a) - model(b)
    assert model(a.intersection(b)) == model(a) & model(b)
    assert a.contains(b) == (model(b) <= model(a))
    assert not model(a.difference(b)) & model(b)
    assert a.count() == len(model(a))
    assert (a == b) == (model(a) == model(b))


@given(
    st.lists(
        st.tuples(
            st.sampled_from([U1, U2, U1.upper()]),
            st.lists(intervals, min_size=1, max_size=3),
            st.sampled_from(["", " ", "\n", " \n "]),
        ),
        max_size=4,
    )
)
def test_prop_mysql_parse_of_messy_text_matches_model(
    items: list[tuple[str, list[tuple[int, int]], str]],
) -> None:
    text = ",".join(
        space + uuid + ":" + ":".join(f"{x}-{y}" if x != y else str(x) for x, y in ranges)
        for uuid, ranges, space in items
    )
    expected = {
        (MysqlSource(uuid.lower()), n)
        for uuid, ranges, _ in items
        for x, y in ranges
        for n in range(x, y + 1)
    }
    assert model(MysqlGtidSet.parse(text)) == expected


@settings(max_examples=200)
@given(st.one_of(st.lists(mysql_sets, max_size=5), st.lists(mariadb_sets, max_size=5)))
def test_prop_most_advanced_returns_exactly_the_maximal_positions(
    positions: list[Position],
) -> None:
    mapping = dict(enumerate(positions))
    chosen = most_advanced(mapping)
    assert chosen == sorted(chosen)
    assert bool(chosen) == bool(mapping)
    for key, pos in mapping.items():
        beaten = any(other.contains(pos) and not pos.contains(other) for other in positions)
        assert (key in chosen) == (not beaten)
    tops = [k for k, p in mapping.items() if all(p.contains(o) for o in positions)]
    if tops:
        assert chosen == tops
