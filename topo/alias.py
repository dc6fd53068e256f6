"""Tablet aliases (`<cell>-<uid>`) and key-range shard names: parsed once, validated strictly.

Every API input goes through these parsers so that a malformed name is a clear
`InvalidArgumentError` at the edge, never a KeyError deep inside a workflow.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from topo.errors import InvalidArgumentError

_CELL = re.compile(r"^[a-z0-9][a-z0-9_]{0,62}$")
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.]{0,62}$")
_SHARD = re.compile(r"^(?:[0-9]+|[0-9a-f]*-[0-9a-f]*)$")
_ALIAS = re.compile(r"^([a-z0-9][a-z0-9_]{0,62})-([0-9]{1,10})$")


@dataclass(frozen=True, order=True)
class TabletAlias:
    """A tablet's identity: the cell it lives in and a uid unique within that cell."""

    cell: str
    uid: int

    @classmethod
    def parse(cls, text: str) -> TabletAlias:
        """Parse `zone1-101`; anything else raises InvalidArgumentError."""
        m = _ALIAS.fullmatch(text) if isinstance(text, str) else None
        if m is None:
            raise InvalidArgumentError(f"malformed tablet alias {text!r}: want <cell>-<uid>")
        uid = int(m.group(2))
        if uid > 0xFFFFFFFF:
            raise InvalidArgumentError(f"malformed tablet alias {text!r}: uid out of range")
        return cls(m.group(1), uid)

    def __str__(self) -> str:
        return f"{self.cell}-{self.uid}"


def check_cell(cell: str) -> str:
    """Return the cell name if valid (lower-case letters, digits, underscore)."""
    if not isinstance(cell, str) or not _CELL.fullmatch(cell):
        raise InvalidArgumentError(f"malformed cell name {cell!r}")
    return cell


def check_keyspace(name: str) -> str:
    """Return the keyspace name if valid."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidArgumentError(f"malformed keyspace name {name!r}")
    return name


def check_shard(name: str) -> str:
    """Return the shard name if valid: a number (`0`) or a hex key range (`-80`, `40-80`, `80-`)."""
    if not isinstance(name, str) or not _SHARD.fullmatch(name):
        raise InvalidArgumentError(f"malformed shard name {name!r}: want 0 or a range like -80")
    if "-" in name:
        start, end = name.split("-")
        if start and end and int(start.ljust(16, "0"), 16) >= int(end.ljust(16, "0"), 16):
            raise InvalidArgumentError(f"malformed shard name {name!r}: empty key range")
    return name


def parse_keyspace_shard(text: str) -> tuple[str, str]:
    """Parse `ks/0` or `ks/-80` into (keyspace, shard)."""
    if not isinstance(text, str) or text.count("/") != 1:
        raise InvalidArgumentError(f"malformed keyspace/shard {text!r}: want <keyspace>/<shard>")
    ks, shard = text.split("/")
    return check_keyspace(ks), check_shard(shard)


def shard_names(count: int) -> list[str]:
    """Vitess-style names for `count` equal shards: 1 -> ['0'], 2 -> ['-80', '80-'], 4 -> ..."""
    if count < 1 or count > 256:
        raise InvalidArgumentError(f"shard count must be between 1 and 256, got {count}")
    if count == 1:
        return ["0"]
    step = 256 // count
    if step * count != 256:
        raise InvalidArgumentError(f"shard count must divide 256, got {count}")
    bounds = [f"{i * step:02x}" for i in range(1, count)]
    starts = ["", *bounds]
    ends = [*bounds, ""]
    return [f"{s}-{e}" for s, e in zip(starts, ends, strict=True)]
