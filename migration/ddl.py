"""DDL from the binlog: which table it is about, and the same statement for the target.

Only the statement's head is parsed: the verb, the object and its (possibly qualified, possibly
backquoted) name. The rest of the text is kept as the source wrote it, so column definitions,
options and comments pass through untouched. Statements naming several tables (`DROP TABLE a, b`,
`RENAME TABLE`) and anything not recognised are refused by the caller when they touch a migrated
table, rather than guessed at.

DDL cannot be committed together with the checkpoint (MySQL commits it implicitly), so a worker
killed between the two runs it again. `ALREADY_APPLIED_CODES` are the errors that mean "that was
done already" (the column, key or table exists, or is gone); the sync accepts them when it
replays.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from migration.schema import qualified, quote

_NAME = r"(?:`(?:[^`]|``)+`|[A-Za-z0-9_$]+)"
_QNAME = rf"(?P<name>{_NAME}(?:\s*\.\s*{_NAME})?)"
_TABLE_DDL = re.compile(
    r"^\s*(?P<verb>CREATE(?:\s+OR\s+REPLACE)?(?:\s+TEMPORARY)?|ALTER(?:\s+ONLINE|\s+IGNORE)*|DROP"
    r"(?:\s+TEMPORARY)?|TRUNCATE)\s+(?P<kw>TABLE)(?P<ifx>\s+IF\s+(?:NOT\s+)?EXISTS)?\s+"
    + _QNAME
    + r"(?P<rest>.*)$",
    re.I | re.S,
)
_TRUNCATE_NO_TABLE = re.compile(
    r"^\s*TRUNCATE\s+(?!TABLE\b)" + _QNAME + r"(?P<rest>.*)$", re.I | re.S
)
# The options that may follow ALTER DATABASE directly when it names no schema (then it alters
# the default one): not a schema name.
_DB_OPTION = r"(?:DEFAULT|CHARACTER|CHARSET|COLLATE|ENCRYPTION|READ|COMMENT)\b"
_DB_DDL = re.compile(
    r"^\s*(?P<verb>CREATE|DROP|ALTER)\s+(?:DATABASE|SCHEMA)\b(?P<ifx>\s+IF\s+(?:NOT\s+)?EXISTS)?"
    r"(?:\s+(?!" + _DB_OPTION + r")(?P<name>" + _NAME + r"))?(?P<rest>.*)$",
    re.I | re.S,
)
_OTHER_DDL = re.compile(r"^\s*(CREATE|ALTER|DROP|RENAME|TRUNCATE)\b", re.I)

# ER_DUP_FIELDNAME, ER_DUP_KEYNAME, ER_CANT_DROP_FIELD_OR_KEY, ER_TABLE_EXISTS_ERROR,
# ER_BAD_TABLE_ERROR, ER_DB_CREATE_EXISTS, ER_DB_DROP_EXISTS
ALREADY_APPLIED_CODES = frozenset({1060, 1061, 1091, 1050, 1051, 1007, 1008})


def _unquote(name: str) -> str:
    name = name.strip()
    if name.startswith("`"):
        return name[1:-1].replace("``", "`")
    return name


def _split_qualified(text: str, default_db: str) -> tuple[str, str]:
    m = re.fullmatch(rf"\s*({_NAME})\s*\.\s*({_NAME})\s*", text)
    if m:
        return _unquote(m.group(1)), _unquote(m.group(2))
    return default_db, _unquote(text)


@dataclass(frozen=True)
class ParsedDdl:
    """A DDL statement about one table (`table` set) or one schema (`table` empty)."""

    verb: str  # CREATE, ALTER, DROP, TRUNCATE
    db: str
    table: str
    text: str
    _head: str
    _ifx: str
    _rest: str

    @property
    def is_table(self) -> bool:
        return bool(self.table)

    def for_target(self, target_db: str, target_table: str = "") -> str:
        """The statement against the target's names; CREATE and DROP made idempotent."""
        ifx = self._ifx
        if not ifx and self.verb == "CREATE":
            ifx = " IF NOT EXISTS"
        elif not ifx and self.verb == "DROP":
            ifx = " IF EXISTS"
        if self.is_table:
            name = qualified(target_db, target_table)
            if "OR REPLACE" in self._head.upper():
                ifx = ""
            return f"{self._head}{ifx} {name}{self._rest}"
        return f"{self._head}{ifx} {quote(target_db)}{self._rest}"


class UnparsedDdl(ValueError):
    """A DDL statement this module does not rewrite."""


def parse_ddl(query: str, default_db: str) -> ParsedDdl | None:
    """The table or schema a DDL statement is about; None if it is not DDL at all (a query
    event such as `SAVEPOINT`); UnparsedDdl for DDL we do not rewrite."""
    m = _TABLE_DDL.match(query)
    if m:
        db, table = _split_qualified(m.group("name"), default_db)
        if m.group("verb").upper().startswith("DROP") and m.group("rest").lstrip().startswith(","):
            raise UnparsedDdl(f"a DROP TABLE of several tables: {query[:200]}")
        head = f"{m.group('verb')} {m.group('kw')}"
        return ParsedDdl(m.group("verb").split()[0].upper(), db, table, query, head,
                         m.group("ifx") or "", m.group("rest"))  # fmt: skip
    m = _TRUNCATE_NO_TABLE.match(query)
    if m:
        db, table = _split_qualified(m.group("name"), default_db)
        return ParsedDdl("TRUNCATE", db, table, query, "TRUNCATE TABLE", "", m.group("rest"))
    m = _DB_DDL.match(query)
    if m and (m.group("name") or m.group("verb").upper() == "ALTER"):
        verb = m.group("verb").upper()
        name = m.group("name")
        cut = m.start("ifx") if m.group("ifx") else m.start("name") if name else m.start("rest")
        db = _unquote(name) if name else default_db
        return ParsedDdl(verb, db, "", query, query[:cut].rstrip(), m.group("ifx") or "",
                         m.group("rest"))  # fmt: skip
    if _OTHER_DDL.match(query):
        raise UnparsedDdl(f"DDL not supported by the migration engine: {query[:200]}")
    return None
