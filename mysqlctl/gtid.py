"""GTID positions of MariaDB and MySQL, as immutable values with set algebra.

Reparenting decides everything from positions: has the primary-elect caught up, which replica is
the most advanced, does a replica hold transactions the primary never had. This module is the pure
logic for those questions; it parses the text servers print, compares positions, and prints them
back with a flavor prefix (``MariaDB/0-101-42``, ``MySQL56/<uuid>:1-42``) so that a position stored
in a journal row or a workflow record says which parser it needs.

The two flavors do not describe the same thing:

* MariaDB keeps, per replication domain, only the last GTID (``domain-server-seq``). Sequence
  numbers grow monotonically inside a domain (``gtid_strict_mode``), so "domain 0 up to seq 42"
  stands for every transaction of that domain up to 42. A position is therefore a map, and the set
  operations work per domain on sequence numbers.
* MySQL keeps the exact set of executed transactions: per source uuid (and, since 8.3, per tag),
  a list of disjoint intervals of transaction numbers. The set operations are exact.

Positions are partially ordered (two replicas can each have something the other lacks), so there is
no ``<``; use :meth:`Position.contains` or :func:`compare`.
"""

from __future__ import annotations

import abc
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from itertools import pairwise
from types import MappingProxyType
from typing import ClassVar, Literal, TypeVar

__all__ = [
    "GtidParseError",
    "Interval",
    "MariadbGtid",
    "MariadbGtidSet",
    "MysqlGtidSet",
    "MysqlSource",
    "Position",
    "compare",
    "find_errant",
    "most_advanced",
    "parse_position",
]

K = TypeVar("K")
Comparison = Literal["equal", "ahead", "behind", "diverged"]


class GtidParseError(ValueError):
    """Text that is not a valid GTID position; the message quotes the offending text."""


def _parse_error(what: str, text: str, whole: str | None = None) -> GtidParseError:
    """Build a parse error that names the bad fragment and, if different, the whole input."""
    message = f"invalid {what}: {text!r}"
    if whole is not None and whole != text:
        message += f" in {whole!r}"
    return GtidParseError(message)


class Position(abc.ABC):
    """A replication position / GTID set of one flavor. Immutable, hashable, compared by value.

    Operations between positions of different flavors raise ``TypeError``: a MariaDB position says
    nothing about a MySQL one, and mixing them is always a bug in the caller.
    """

    flavor: ClassVar[str]

    @abc.abstractmethod
    def contains(self, other: Position) -> bool:
        """True if every transaction of ``other`` is also in ``self`` (``self`` ⊇ ``other``)."""

    @abc.abstractmethod
    def union(self, other: Position) -> Position:
        """The smallest position that contains both ``self`` and ``other``."""

    @abc.abstractmethod
    def intersection(self, other: Position) -> Position:
        """A position contained in both ``self`` and ``other`` (the largest one expressible)."""

    @abc.abstractmethod
    def difference(self, other: Position) -> Position:
        """The transactions of ``self`` that are not in ``other``."""

    @abc.abstractmethod
    def is_empty(self) -> bool:
        """True if the position holds no transaction at all (a fresh server)."""

    @abc.abstractmethod
    def body(self) -> str:
        """The position in the server's own syntax, without the flavor prefix."""

    def encode(self) -> str:
        """The printed form with the flavor prefix, the input of :func:`parse_position`."""
        return f"{self.flavor}/{self.body()}"

    def __str__(self) -> str:
        return self.encode()

    def __repr__(self) -> str:
        return f"{type(self).__name__}.parse({self.body()!r})"

    def _same_flavor(self, other: Position) -> None:
        """Refuse to relate positions of two flavors; their numbers mean different things."""
        if type(other) is not type(self):
            raise TypeError(
                f"cannot relate a {self.flavor} position to {type(other).__name__} ({other!r})"
            )


# --------------------------------------------------------------------------------------------
# MariaDB

_MAX_U32 = 2**32 - 1
_MAX_U64 = 2**64 - 1
_MARIADB_GTID_RE = re.compile(r"([0-9]{1,20})-([0-9]{1,20})-([0-9]{1,20})")


@dataclass(frozen=True, order=True)
class MariadbGtid:
    """One MariaDB GTID: a transaction numbered ``seq`` in replication ``domain``, first written by
    ``server_id``. Printed ``domain-server_id-seq``."""

    domain: int
    server_id: int
    seq: int

    def __post_init__(self) -> None:
        _check_range("domain", self.domain, _MAX_U32)
        _check_range("server_id", self.server_id, _MAX_U32)
        _check_range("seq", self.seq, _MAX_U64)

    @classmethod
    def parse(cls, text: str) -> MariadbGtid:
        """Parse ``domain-server_id-seq`` (unsigned decimal numbers, no signs or spaces inside)."""
        match = _MARIADB_GTID_RE.fullmatch(text.strip())
        if match is None:
            raise _parse_error("MariaDB GTID", text)
        try:
            return cls(*(int(group) for group in match.groups()))
        except ValueError as exc:
            raise GtidParseError(f"invalid MariaDB GTID {text!r}: {exc}") from None

    def is_after(self, other: MariadbGtid) -> bool:
        """True if this GTID is a later point than ``other`` in the same domain's history.

        Equal sequence numbers from different servers are two different transactions that claim
        the same place in the domain (two primaries wrote at once): neither is after the other.
        """
        return self.seq > other.seq or self == other

    def __str__(self) -> str:
        return f"{self.domain}-{self.server_id}-{self.seq}"


def _check_range(name: str, value: int, maximum: int) -> None:
    """Keep numbers inside what the server can store, so that a typo is caught at parse time."""
    if not 0 <= value <= maximum:
        raise ValueError(f"{name} {value} out of range 0..{maximum}")


@dataclass(frozen=True, repr=False)
class MariadbGtidSet(Position):
    """MariaDB position: a map domain_id -> the last GTID of that replication domain.

    This is the form of ``@@gtid_binlog_pos``, ``@@gtid_slave_pos`` and ``@@gtid_current_pos``.
    A GTID stands for every transaction of its domain up to its sequence number, so ``contains``
    compares sequence numbers per domain. One refinement over a plain ``seq >=`` comparison: two
    GTIDs with the same domain and seq but different server ids are different transactions (a
    split brain or an errant write), so neither position contains the other there and
    :func:`compare` reports ``"diverged"`` rather than ``"equal"``.

    Build one with :meth:`parse` or from GTIDs; the GTIDs are kept sorted by domain, and a domain
    may appear only once.
    """

    flavor: ClassVar[str] = "MariaDB"
    gtids: tuple[MariadbGtid, ...] = ()

    def __post_init__(self) -> None:
        ordered = tuple(sorted(self.gtids))
        for before, after in pairwise(ordered):
            if before.domain == after.domain:
                raise ValueError(f"two GTIDs for domain {before.domain}: {before} and {after}")
        object.__setattr__(self, "gtids", ordered)

    @classmethod
    def parse(cls, text: str) -> MariadbGtidSet:
        """Parse the server form ``0-101-42,1-102-7``; empty text is the empty position.

        Whitespace and newlines around the GTIDs are ignored (servers and shells add them).
        """
        if not text.strip():
            return cls()
        gtids: dict[int, MariadbGtid] = {}
        for item in text.split(","):
            if not item.strip():
                raise _parse_error("MariaDB position (empty element)", text)
            try:
                gtid = MariadbGtid.parse(item)
            except GtidParseError as exc:
                raise GtidParseError(f"{exc} in {text!r}") from None
            if gtid.domain in gtids:
                raise _parse_error(f"MariaDB position (domain {gtid.domain} twice)", text)
            gtids[gtid.domain] = gtid
        return cls(tuple(gtids.values()))

    @classmethod
    def from_gtids(cls, gtids: Iterable[MariadbGtid]) -> MariadbGtidSet:
        """Build a position from GTIDs of distinct domains, in any order."""
        return cls(tuple(gtids))

    def domains(self) -> Mapping[int, MariadbGtid]:
        """The last GTID of each domain, keyed by domain id (read-only view)."""
        return MappingProxyType({gtid.domain: gtid for gtid in self.gtids})

    def contains(self, other: Position) -> bool:
        theirs = self._other_domains(other)
        mine = self.domains()
        return all(
            domain in mine and mine[domain].is_after(gtid) for domain, gtid in theirs.items()
        )

    def union(self, other: Position) -> MariadbGtidSet:
        """Per domain, the later GTID.

        If both name the same seq from different servers the histories conflict and no MariaDB
        position contains both; the GTID with the higher server id is kept so that the result
        does not depend on the order of the operands.
        """
        merged = dict(self.domains())
        for domain, gtid in self._other_domains(other).items():
            current = merged.get(domain)
            if current is None or (gtid.seq, gtid.server_id) > (current.seq, current.server_id):
                merged[domain] = gtid
        return MariadbGtidSet.from_gtids(merged.values())

    def intersection(self, other: Position) -> MariadbGtidSet:
        """Per domain present in both, the earlier GTID; conflicting domains are left out."""
        theirs = self._other_domains(other)
        kept = []
        for gtid in self.gtids:
            their = theirs.get(gtid.domain)
            if their is None:
                continue
            if their.is_after(gtid):
                kept.append(gtid)
            elif gtid.is_after(their):
                kept.append(their)
        return MariadbGtidSet.from_gtids(kept)

    def difference(self, other: Position) -> MariadbGtidSet:
        """The GTIDs of ``self`` that ``other`` does not reach: their domain is missing in
        ``other`` or ``other`` is at an earlier (or conflicting) point of it.

        A MariaDB position cannot say "transactions 41 to 50 of domain 0", so a domain that is
        ahead is returned as ``self``'s whole GTID for it; what matters to callers is which
        domains are ahead and how far.
        """
        theirs = self._other_domains(other)
        return MariadbGtidSet.from_gtids(
            gtid
            for gtid in self.gtids
            if gtid.domain not in theirs or not theirs[gtid.domain].is_after(gtid)
        )

    def is_empty(self) -> bool:
        return not self.gtids

    def body(self) -> str:
        return ",".join(str(gtid) for gtid in self.gtids)

    def _other_domains(self, other: Position) -> Mapping[int, MariadbGtid]:
        self._same_flavor(other)
        assert isinstance(other, MariadbGtidSet)
        return other.domains()


# --------------------------------------------------------------------------------------------
# MySQL

Interval = tuple[int, int]
"""An inclusive range ``(first, last)`` of transaction numbers, ``1 <= first <= last``."""

_MAX_GNO = 2**63 - 1  # transaction numbers are positive signed 64-bit integers
_UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_TAG_RE = re.compile(r"[a-z_][a-z0-9_]{0,31}")
_INTERVAL_RE = re.compile(r"([0-9]{1,19})(?:-([0-9]{1,19}))?")


@dataclass(frozen=True, order=True)
class MysqlSource:
    """Where a MySQL transaction number comes from: the source server's uuid and, for MySQL 8.3+
    tagged GTIDs, a tag (``""`` for untagged). Numbering is independent per (uuid, tag)."""

    uuid: str
    tag: str = ""

    def __post_init__(self) -> None:
        if _UUID_RE.fullmatch(self.uuid) is None:
            raise ValueError(f"not a lower-case 8-4-4-4-12 hex uuid: {self.uuid!r}")
        if self.tag and _TAG_RE.fullmatch(self.tag) is None:
            raise ValueError(f"not a GTID tag: {self.tag!r}")

    def __str__(self) -> str:
        return f"{self.uuid}:{self.tag}" if self.tag else self.uuid


@dataclass(frozen=True, repr=False)
class MysqlGtidSet(Position):
    """MySQL 5.6+/8 GTID set: per source, sorted disjoint intervals (the form of
    ``@@gtid_executed``). All operations are exact set operations.

    Tagged GTIDs of MySQL 8.3+ (``uuid:tag:1-5``) are accepted: each (uuid, tag) pair is its own
    source. Tags are lower-cased like uuids, and printed after the untagged intervals of the uuid,
    in tag order.
    """

    flavor: ClassVar[str] = "MySQL56"
    entries: tuple[tuple[MysqlSource, tuple[Interval, ...]], ...] = ()

    def __post_init__(self) -> None:
        merged: dict[MysqlSource, list[Interval]] = {}
        for source, intervals in self.entries:
            for first, last in intervals:
                if not 1 <= first <= last <= _MAX_GNO:
                    raise ValueError(f"bad interval {first}-{last} for {source}")
            merged.setdefault(source, []).extend(intervals)
        normal = tuple(
            (source, _normalise(intervals))
            for source, intervals in sorted(merged.items())
            if intervals
        )
        object.__setattr__(self, "entries", normal)

    @classmethod
    def parse(cls, text: str) -> MysqlGtidSet:
        """Parse ``uuid:1-5:7,uuid2:3`` (and ``uuid:tag:1-5``); empty text is the empty set.

        Whitespace and newlines around elements are ignored (``@@gtid_executed`` puts a newline
        after each comma), uuids and tags are case-insensitive, and overlapping or unsorted
        intervals are merged, as the server does.
        """
        if not text.strip():
            return cls()
        entries: list[tuple[MysqlSource, tuple[Interval, ...]]] = []
        for item in text.split(","):
            if not item.strip():
                raise _parse_error("MySQL GTID set (empty element)", text)
            entries.extend(_parse_mysql_element(item.strip(), text))
        return cls(tuple(entries))

    @classmethod
    def from_intervals(cls, intervals: Mapping[MysqlSource, Iterable[Interval]]) -> MysqlGtidSet:
        """Build a set from intervals per source, in any order, overlapping or not."""
        return cls(tuple((source, tuple(ranges)) for source, ranges in intervals.items()))

    def intervals(self) -> Mapping[MysqlSource, tuple[Interval, ...]]:
        """The normalised intervals of each source (read-only view)."""
        return MappingProxyType(dict(self.entries))

    def contains(self, other: Position) -> bool:
        mine = self.intervals()
        return all(
            not _subtract(ranges, mine.get(source, ()))
            for source, ranges in self._other_entries(other)
        )

    def union(self, other: Position) -> MysqlGtidSet:
        return MysqlGtidSet(self.entries + self._other_entries(other))

    def intersection(self, other: Position) -> MysqlGtidSet:
        theirs = dict(self._other_entries(other))
        return MysqlGtidSet(
            tuple(
                (source, _intersect(ranges, theirs[source]))
                for source, ranges in self.entries
                if source in theirs
            )
        )

    def difference(self, other: Position) -> MysqlGtidSet:
        theirs = dict(self._other_entries(other))
        return MysqlGtidSet(
            tuple(
                (source, _subtract(ranges, theirs.get(source, ())))
                for source, ranges in self.entries
            )
        )

    def is_empty(self) -> bool:
        return not self.entries

    def count(self) -> int:
        """Number of transactions in the set (how far apart two sets are, for logs and metrics)."""
        return sum(last - first + 1 for _, ranges in self.entries for first, last in ranges)

    def body(self) -> str:
        parts: list[str] = []
        for source, ranges in self.entries:
            text = ":".join(_format_interval(interval) for interval in ranges)
            if parts and source.tag and parts[-1].startswith(source.uuid):
                parts[-1] += f":{source.tag}:{text}"
            else:
                parts.append(f"{source}:{text}")
        return ",".join(parts)

    def _other_entries(
        self, other: Position
    ) -> tuple[tuple[MysqlSource, tuple[Interval, ...]], ...]:
        self._same_flavor(other)
        assert isinstance(other, MysqlGtidSet)
        return other.entries


def _parse_mysql_element(item: str, whole: str) -> list[tuple[MysqlSource, tuple[Interval, ...]]]:
    """Parse one ``uuid[:tag]:interval[:interval...][:tag:interval...]`` element.

    A tag applies to the intervals after it, up to the next tag; every tag (and the uuid itself, if
    no tag follows it directly) needs at least one interval.
    """
    uuid, *tokens = (token.strip() for token in item.lower().split(":"))
    if _UUID_RE.fullmatch(uuid) is None:
        raise _parse_error("MySQL GTID set (bad uuid)", item.split(":")[0].strip(), whole)
    if not tokens:
        raise _parse_error("MySQL GTID set (uuid without intervals)", item, whole)
    groups: list[tuple[MysqlSource, list[Interval]]] = []
    for token in tokens:
        if _TAG_RE.fullmatch(token) is not None:
            if groups and not groups[-1][1]:
                raise _parse_error("MySQL GTID set (tag without intervals)", item, whole)
            groups.append((MysqlSource(uuid, token), []))
            continue
        if not groups:
            groups.append((MysqlSource(uuid), []))
        groups[-1][1].append(_parse_interval(token, whole))
    if not groups[-1][1]:
        raise _parse_error("MySQL GTID set (tag without intervals)", item, whole)
    return [(source, tuple(ranges)) for source, ranges in groups]


def _parse_interval(token: str, whole: str) -> Interval:
    """Parse ``a`` or ``a-b`` with ``1 <= a <= b`` and both within the server's numbering."""
    match = _INTERVAL_RE.fullmatch(token)
    if match is None:
        raise _parse_error("MySQL GTID interval", token, whole)
    first = int(match.group(1))
    last = int(match.group(2)) if match.group(2) is not None else first
    if not 1 <= first <= last <= _MAX_GNO:
        raise _parse_error(f"MySQL GTID interval (need 1 <= a <= b <= {_MAX_GNO})", token, whole)
    return (first, last)


def _format_interval(interval: Interval) -> str:
    first, last = interval
    return str(first) if first == last else f"{first}-{last}"


def _normalise(intervals: Iterable[Interval]) -> tuple[Interval, ...]:
    """Sort and merge overlapping or adjacent intervals, so that equal sets print alike."""
    merged: list[Interval] = []
    for first, last in sorted(intervals):
        if merged and first <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], last))
        else:
            merged.append((first, last))
    return tuple(merged)


def _subtract(left: tuple[Interval, ...], right: tuple[Interval, ...]) -> tuple[Interval, ...]:
    """``left`` minus ``right``, both normalised; one pass over each."""
    result: list[Interval] = []
    start = 0
    for first, last in left:
        while start < len(right) and right[start][1] < first:
            start += 1
        cursor = first
        for cut_first, cut_last in right[start:]:
            if cut_first > last or cursor > last:
                break
            if cut_first > cursor:
                result.append((cursor, cut_first - 1))
            cursor = max(cursor, cut_last + 1)
        if cursor <= last:
            result.append((cursor, last))
    return tuple(result)


def _intersect(left: tuple[Interval, ...], right: tuple[Interval, ...]) -> tuple[Interval, ...]:
    """``left`` ∩ ``right``, both normalised; a merge walk over the two lists."""
    result: list[Interval] = []
    i = j = 0
    while i < len(left) and j < len(right):
        first = max(left[i][0], right[j][0])
        last = min(left[i][1], right[j][1])
        if first <= last:
            result.append((first, last))
        if left[i][1] < right[j][1]:
            i += 1
        else:
            j += 1
    return tuple(result)


# --------------------------------------------------------------------------------------------
# Printed positions and decisions

_FLAVORS: Mapping[str, type[MariadbGtidSet] | type[MysqlGtidSet]] = {
    MariadbGtidSet.flavor: MariadbGtidSet,
    MysqlGtidSet.flavor: MysqlGtidSet,
}


def parse_position(text: str) -> Position:
    """Parse the printed form with its flavor prefix: ``MariaDB/0-101-42`` or
    ``MySQL56/<uuid>:1-42``; an empty body is the empty position of that flavor.

    Raises :class:`GtidParseError` on a missing or unknown prefix or a bad body.
    """
    flavor, slash, body = text.strip().partition("/")
    if not slash:
        raise _parse_error("position (no flavor prefix such as 'MariaDB/')", text)
    parser = _FLAVORS.get(flavor)
    if parser is None:
        known = ", ".join(_FLAVORS)
        raise _parse_error(f"position (unknown flavor {flavor!r}, expected one of {known})", text)
    return parser.parse(body)


def compare(a: Position, b: Position) -> Comparison:
    """Where ``a`` stands relative to ``b``: ``"equal"``, ``"ahead"`` (``a`` has all of ``b`` and
    more), ``"behind"`` (the reverse) or ``"diverged"`` (each has something the other lacks, the
    sign of errant transactions or a split brain). Different flavors raise ``TypeError``.
    """
    a_has_b = a.contains(b)
    b_has_a = b.contains(a)
    if a_has_b and b_has_a:
        return "equal"
    if a_has_b:
        return "ahead"
    if b_has_a:
        return "behind"
    return "diverged"


def find_errant(executed: Position, replicated: Position) -> Position:
    """Transactions a replica executed that did not come through replication (local writes):
    ``executed`` minus ``replicated``. An errant replica must never be promoted, since its extra
    transactions would then be replicated to (or conflict with) every other server.

    * MariaDB: pass the replica's ``@@gtid_binlog_pos`` as ``executed`` and its
      ``@@gtid_slave_pos`` as ``replicated``. With ``log_slave_updates`` a clean replica has
      binlog_pos == slave_pos; a local write adds a newer GTID (in some domain, with the replica's
      own server id) to binlog_pos that slave_pos lacks. A server that was itself a primary and
      has not yet received anything from its new source also shows its own old writes here, so
      check it against the primary's position before calling them errant.
    * MySQL: pass ``@@gtid_executed`` and the set received from the source (the primary's
      ``@@gtid_executed``, or the replica's ``Retrieved_Gtid_Set`` joined with what it had when
      it was attached); the result is exact.

    An empty result means no errant transaction.
    """
    return executed.difference(replicated)


def most_advanced(positions: Mapping[K, Position]) -> list[K]:
    """The keys whose position is not strictly contained in any other position, in the mapping's
    order.

    When one position contains all the others this is that position's key, or all keys tied with
    it (equal positions). When positions diverged, no single winner exists and every maximal
    position is returned; the caller must decide (usually: refuse, or look for errant GTIDs).
    Empty input gives ``[]``; positions of different flavors raise ``TypeError``.
    """
    items = list(positions.items())
    return [
        key
        for key, position in items
        if not any(_strictly_contains(other, position) for _, other in items)
    ]


def _strictly_contains(bigger: Position, smaller: Position) -> bool:
    return bigger.contains(smaller) and not smaller.contains(bigger)
