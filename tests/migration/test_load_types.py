"""The full load copies every column type exactly, whether the source server prints the rows as
SQL literals (the fast path) or the rows are decoded and escaped again (tables with a BIT or
spatial column), and the sync after it keeps them exact (empty SETs, NULs, quotes, backslashes,
binary bytes, 4-byte UTF-8, exact FLOAT and DOUBLE)."""

from __future__ import annotations

import random
import struct

import pytest

from migration.load import server_literals
from migration.schema import table_info
from tests.migration.conftest import MigrationCluster, wait_target_equals

ALL_TYPES = (
    "id BIGINT UNSIGNED PRIMARY KEY, ti TINYINT, si SMALLINT, mi MEDIUMINT, i INT, "
    "de DECIMAL(30,10), yr YEAR, d DOUBLE, f FLOAT, c CHAR(10), vc VARCHAR(200), tx TEXT, "
    "en ENUM('a','b','c d'), st SET('x','y','z'), dt DATE, dtm DATETIME(6), ts TIMESTAMP(3) NULL, "
    "tm TIME(2), bi BINARY(4), vb VARBINARY(64), bl BLOB"
)
TRICKY_TEXT = ["", "'", "\\", "a'b\\c", "\x00nul", "line\nbreak", "tab\t", "ctrl-z\x1a", "ünïcødé 漢字 🐬",
               "%_", "NULL", "--"]  # fmt: skip
TRICKY_BYTES = [b"", b"\x00\x00", b"'\\\"", bytes(range(0, 64)), b"\xff\xfe", b"NULL"]


def _row(i: int, rnd: random.Random) -> tuple[object, ...]:
    if i % 11 == 0:
        return (i, *([None] * 20))
    text = TRICKY_TEXT[i % len(TRICKY_TEXT)]
    blob = TRICKY_BYTES[i % len(TRICKY_BYTES)]
    flt = struct.unpack("f", struct.pack("f", rnd.uniform(-1e6, 1e6)))[0]
    return (
        i, rnd.randint(-128, 127), rnd.randint(-32768, 32767), rnd.randint(-8388608, 8388607),
        rnd.randint(-(2**31), 2**31 - 1), f"{rnd.randint(-10**19, 10**19)}.{rnd.randint(0, 10**10 - 1):010d}",
        1901 + i % 254, rnd.uniform(-1e300, 1e300) if i % 2 else rnd.random(), flt,
        text[:10], text, text * 3, ["a", "b", "c d"][i % 3], ["x", "x,y", "", "y,z"][i % 4],
        f"20{i % 100:02d}-0{1 + i % 9}-1{i % 9}", f"2026-12-01 12:34:56.{i % 1000000:06d}",
        f"2021-03-0{1 + i % 9} 01:02:03.{i % 1000:03d}", f"{i % 800}:59:58.{i % 100:02d}",
        blob[:4].ljust(4, b"\x00"), blob, blob * 10,
    )  # fmt: skip


@pytest.mark.parametrize("extra_column", ["", ", b BIT(12) NULL"])
async def test_every_type_is_copied_exactly(mcluster: MigrationCluster, extra_column: str) -> None:
    mc = mcluster
    rnd = random.Random(7)
    async with await mc.primary_session("-80") as s:
        await s.execute("CREATE DATABASE IF NOT EXISTS typed")
        await s.execute(
            f"CREATE TABLE typed.t ({ALL_TYPES}{extra_column}) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"
        )
        cols = "id, ti, si, mi, i, de, yr, d, f, c, vc, tx, en, st, dt, dtm, ts, tm, bi, vb, bl"
        marks = ", ".join(["%s"] * 21)
        for i in range(1, 400):
            await s.execute(f"INSERT INTO typed.t ({cols}) VALUES ({marks})", _row(i, rnd))
        info = await table_info(s, "typed", "t")
    assert (server_literals(info) is None) == bool(extra_column)  # BIT: the decoding path
    task = (
        "name: typed\n"
        f"target: {{host: {mc.target.host}, port: {mc.target.port}}}\n"
        f"sources:\n  - source-id: {mc.keyspace}/-80\n"
        'block-allow-list: {do-dbs: ["typed"]}\n'
        "loader: {chunk-rows: 37}\n"
    )
    mc.start_scheduler()
    mc.start_worker("w1")
    await mc.ops().start(task)
    await wait_target_equals(mc, [("-80", "typed", "t")], ("typed", "t"))
    # And the sync after the load keeps the same values exact.
    async with await mc.primary_session("-80") as s:
        for i in range(400, 450):
            await s.execute(f"INSERT INTO typed.t ({cols}) VALUES ({marks})", _row(i, rnd))
    await wait_target_equals(mc, [("-80", "typed", "t")], ("typed", "t"))
