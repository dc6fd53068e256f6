"""Unit tests of task files (migration/spec.py): strict parsing with errors that name the key,
the block-allow-list, and routing. Pure logic, no server."""

from __future__ import annotations

import re
import textwrap
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

import migration.spec
from migration.errors import TaskConfigError
from migration.spec import (
    SYSTEM_SCHEMAS,
    BlockAllowList,
    Endpoint,
    Route,
    TableRef,
    TaskSpec,
    parse_task,
    parse_task_yaml,
)


def docstring_example() -> str:
    """The indented YAML block of the module docstring."""
    doc = migration.spec.__doc__
    assert doc is not None
    block = re.search(r"^( {4}name:.*\n(?: {4}.*\n|\n)*)", doc, re.M)
    assert block is not None
    return textwrap.dedent(block.group(1))


def minimal(**extra: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "name": "t1",
        "target": {"host": "127.0.0.1", "port": 3306},
        "sources": [{"source-id": "commerce/-80"}],
    }
    doc.update(extra)
    return doc


def config_error(doc: Any) -> TaskConfigError:
    with pytest.raises(TaskConfigError) as info:
        parse_task(doc)
    return info.value


def task(routes: list[Route] | None = None, **kw: Any) -> TaskSpec:
    return TaskSpec(
        name="t", target=Endpoint("127.0.0.1", 3306), sources=(), routes=tuple(routes or ()), **kw
    )


# -- the example and defaults -----------------------------------------------------------------


def test_docstring_example_parses_into_every_field() -> None:
    text = docstring_example()
    assert text.startswith("name: merge-orders")
    spec = parse_task_yaml(text)
    assert spec.name == "merge-orders"
    assert spec.task_mode == "all"
    assert spec.shard_mode == "pessimistic"
    assert spec.meta_schema == "dm_meta"
    assert spec.target == Endpoint("127.0.0.1", 3306)
    assert [s.source_id for s in spec.sources] == ["commerce/-80", "legacy-1"]
    shard, external = spec.sources
    assert shard.shard == ("commerce", "-80")
    assert shard.endpoint is None
    assert shard.tablet_types == ("replica", "primary")
    assert external.shard is None
    assert external.endpoint == Endpoint("127.0.0.1", 3307)
    assert spec.block_allow_list.do_dbs == ("shard_db_*",)
    assert spec.routes == (Route(0, "shard_db_*", "shard_table_*", "shard_db", "shard_table"),)
    assert spec.safe_mode is False
    assert spec.chunk_rows == 5000
    assert spec.batch_rows == 500
    assert spec.raw["name"] == "merge-orders"
    assert spec.route("shard_db_3", "shard_table_07") == ("shard_db", "shard_table")


def test_minimal_task_gets_the_documented_defaults() -> None:
    spec = parse_task(minimal())
    assert (spec.task_mode, spec.shard_mode, spec.meta_schema) == ("all", "", "dm_meta")
    assert spec.routes == ()
    assert spec.block_allow_list == BlockAllowList()
    assert (spec.chunk_rows, spec.batch_rows, spec.safe_mode) == (5000, 500, False)
    assert spec.sources[0].tablet_types == ("replica", "primary")


def test_tablet_types_accept_a_list_or_comma_text_and_drop_repeats() -> None:
    text = parse_task(minimal(sources=[{"source-id": "ks/0", "tablet-types": "rdonly, replica"}]))
    listed = parse_task(
        minimal(sources=[{"source-id": "ks/0", "tablet-types": ["primary", "primary"]}])
    )
    assert text.sources[0].tablet_types == ("rdonly", "replica")
    assert listed.sources[0].tablet_types == ("primary",)


def test_source_gtid_is_kept_as_the_start_position() -> None:
    spec = parse_task(minimal(sources=[{"source-id": "ks/0", "gtid": "0-1-42"}]))
    assert spec.sources[0].start_gtid == "0-1-42"


def test_unknown_source_lookup_names_the_known_sources() -> None:
    spec = parse_task(minimal())
    with pytest.raises(TaskConfigError, match=r"no source 'nope' \(sources: commerce/-80\)"):
        spec.source("nope")
    assert spec.source("commerce/-80").source_id == "commerce/-80"


# -- strict validation: every error names its key ---------------------------------------------


def test_unknown_top_level_key_suggests_the_dashed_spelling() -> None:
    err = config_error(minimal(task_mode="full"))
    assert err.key == "task_mode"
    assert "did you mean 'task-mode'?" in err.message
    assert str(err).startswith("task_mode: ")


def test_unknown_key_without_a_near_one_lists_the_known_keys() -> None:
    err = config_error(minimal(colour="blue"))
    assert err.key == "colour"
    assert "did you mean" not in err.message
    assert "known keys: block-allow-list, loader," in err.message


def test_singular_plural_typo_of_a_nested_key_gets_a_hint() -> None:
    err = config_error(minimal(**{"block-allow-list": {"do-db": ["a"]}}))
    assert err.key == "block-allow-list.do-db"
    assert "did you mean 'do-dbs'?" in err.message


@pytest.mark.parametrize(
    ("extra", "key"),
    [
        ({"target": {"host": "h", "port": 1, "socket": "/x"}}, "target.socket"),
        ({"loader": {"chunk_rows": 5}}, "loader.chunk_rows"),
        ({"syncer": {"workers": 5}}, "syncer.workers"),
        ({"sources": [{"source-id": "ks/0", "flavor": "x"}]}, "sources[0].flavor"),
        ({"routes": [{"schema-pattern": "a", "target-schema": "b", "x": 1}]}, "routes[0].x"),
        (
            {"block-allow-list": {"do-tables": [{"db-name": "a", "table": "b"}]}},
            "block-allow-list.do-tables[0].table",
        ),
    ],
)
def test_unknown_nested_key_is_named_with_its_path(extra: dict[str, Any], key: str) -> None:
    err = config_error(minimal(**extra))
    assert err.key == key
    assert "unknown key" in err.message


@pytest.mark.parametrize(
    ("extra", "key"),
    [
        ({"password": "x"}, "password"),
        ({"target": {"host": "h", "port": 1, "user": "root"}}, "target.user"),
        (
            {"sources": [{"source-id": "ext", "from": {"host": "h", "port": 1, "passwd": "x"}}]},
            "sources[0].from.passwd",
        ),
    ],
)
def test_credentials_are_refused_wherever_they_appear(extra: dict[str, Any], key: str) -> None:
    err = config_error(minimal(**extra))
    assert err.key == key
    assert "credentials never go into a task file" in err.message


@pytest.mark.parametrize("name", ["", "1abc", "has space", "a" * 49, "dots.bad", None])
def test_bad_task_name_is_refused_with_key_name(name: Any) -> None:
    assert config_error(minimal(name=name)).key == "name"


def test_longest_allowed_task_name_is_accepted() -> None:
    assert parse_task(minimal(name="a" + "b" * 47)).name == "a" + "b" * 47


@pytest.mark.parametrize(
    ("key", "value"),
    [("task-mode", "fulll"), ("task-mode", ""), ("shard-mode", "optimistic"), ("task-mode", 3)],
)
def test_bad_mode_value_names_the_key_and_the_choices(key: str, value: Any) -> None:
    err = config_error(minimal(**{key: value}))
    assert err.key == key
    assert "want one of" in err.message


@pytest.mark.parametrize("mode", ["full", "incremental", "all"])
def test_every_task_mode_is_accepted(mode: str) -> None:
    assert parse_task(minimal(**{"task-mode": mode})).task_mode == mode


def test_missing_target_is_required() -> None:
    doc = minimal()
    del doc["target"]
    err = config_error(doc)
    assert err.key == "target"
    assert "is required" in err.message


def test_target_without_host_names_target_host() -> None:
    assert config_error(minimal(target={"port": 3306})).key == "target.host"


def test_malformed_host_names_target_host() -> None:
    assert config_error(minimal(target={"host": "a b", "port": 3306})).key == "target.host"


@pytest.mark.parametrize("port", [0, 65536, -1, "3306", True, None, 3306.0])
def test_bad_target_port_names_target_port(port: Any) -> None:
    err = config_error(minimal(target={"host": "127.0.0.1", "port": port}))
    assert err.key == "target.port"
    assert "1 to 65535" in err.message


def test_bad_port_of_an_external_source_names_its_path() -> None:
    doc = minimal(sources=[{"source-id": "ext", "from": {"host": "h", "port": 70000}}])
    assert config_error(doc).key == "sources[0].from.port"


@pytest.mark.parametrize("sources", [[], None, "commerce/-80", {"source-id": "ks/0"}])
def test_sources_must_be_a_non_empty_list(sources: Any) -> None:
    err = config_error(minimal(sources=sources))
    assert err.key == "sources"
    assert "non-empty list" in err.message


def test_duplicate_source_id_names_the_second_one() -> None:
    doc = minimal(sources=[{"source-id": "ks/0"}, {"source-id": "x"}, {"source-id": "ks/0"}])
    err = config_error(doc)
    assert err.key == "sources[2].source-id"
    assert "listed twice" in err.message


def test_source_without_id_is_required() -> None:
    assert (
        config_error(minimal(sources=[{"tablet-types": "replica"}])).key == "sources[0].source-id"
    )


@pytest.mark.parametrize("sid", ["ks/80-/x", "ks/zz", "-ks", "ks/"])
def test_malformed_source_id_is_refused(sid: str) -> None:
    assert config_error(minimal(sources=[{"source-id": sid}])).key == "sources[0].source-id"


def test_from_with_a_shard_looking_id_is_refused() -> None:
    doc = minimal(sources=[{"source-id": "commerce/-80", "from": {"host": "h", "port": 1}}])
    err = config_error(doc)
    assert err.key == "sources[0].source-id"
    assert "external server" in err.message


@pytest.mark.parametrize(
    "source",
    [
        {"source-id": "legacy", "from": {"host": "h", "port": 1}, "tablet-types": "replica"},
        {"source-id": "registered", "tablet-types": "replica"},
    ],
)
def test_tablet_types_on_a_non_shard_source_are_refused(source: dict[str, Any]) -> None:
    err = config_error(minimal(sources=[source]))
    assert err.key == "sources[0].tablet-types"
    assert "only a shard source" in err.message


@pytest.mark.parametrize("types", ["replica,master", ["spare"], [], 5, "replica,,primary"])
def test_bad_tablet_type_names_the_tablet_types_key(types: Any) -> None:
    err = config_error(minimal(sources=[{"source-id": "ks/0", "tablet-types": types}]))
    assert err.key == "sources[0].tablet-types"


@pytest.mark.parametrize(
    ("bal", "key"),
    [
        ({"do-dbs": ["good", "bad name"]}, "block-allow-list.do-dbs[1]"),
        ({"ignore-dbs": ["a.b"]}, "block-allow-list.ignore-dbs[0]"),
        ({"do-dbs": "shard_*"}, "block-allow-list.do-dbs"),
        ({"do-dbs": [3]}, "block-allow-list.do-dbs[0]"),
        (
            {"do-tables": [{"db-name": "d", "tbl-name": "t[0-9]"}]},
            "block-allow-list.do-tables[0].tbl-name",
        ),
        ({"ignore-tables": [{"db-name": "d%"}]}, "block-allow-list.ignore-tables[0].db-name"),
        ({"ignore-tables": [{"tbl-name": "x"}]}, "block-allow-list.ignore-tables[0].db-name"),
        ({"do-tables": {"db-name": "d"}}, "block-allow-list.do-tables"),
    ],
)
def test_malformed_block_allow_list_pattern_names_its_path(bal: dict[str, Any], key: str) -> None:
    assert config_error(minimal(**{"block-allow-list": bal})).key == key


@pytest.mark.parametrize(
    ("route", "key"),
    [
        ({"schema-pattern": "a b", "target-schema": "x"}, "routes[0].schema-pattern"),
        (
            {"schema-pattern": "a", "table-pattern": "t/", "target-schema": "x"},
            "routes[0].table-pattern",
        ),
        (
            {
                "schema-pattern": "a",
                "table-pattern": "t",
                "target-schema": "x",
                "target-table": "y*",
            },
            "routes[0].target-table",
        ),
        ({"schema-pattern": "a", "target-schema": "x*"}, "routes[0].target-schema"),
        ({"target-schema": "x"}, "routes[0].schema-pattern"),
    ],
)
def test_malformed_route_names_its_key(route: dict[str, Any], key: str) -> None:
    assert config_error(minimal(routes=[route])).key == key


def test_route_without_target_schema_is_required() -> None:
    doc = minimal(
        routes=[
            {"schema-pattern": "a", "target-schema": "x"},
            {"schema-pattern": "b", "table-pattern": "t"},
        ]
    )
    err = config_error(doc)
    assert err.key == "routes[1].target-schema"
    assert "is required" in err.message


def test_target_table_without_table_pattern_is_refused() -> None:
    err = config_error(
        minimal(routes=[{"schema-pattern": "a", "target-schema": "x", "target-table": "y"}])
    )
    assert err.key == "routes[0].target-table"
    assert "needs a table-pattern" in err.message


def test_routes_must_be_a_list() -> None:
    assert config_error(minimal(routes={"schema-pattern": "a"})).key == "routes"


@pytest.mark.parametrize("rows", [0, 1_000_001, -5, "100", True, 1.5])
def test_loader_chunk_rows_out_of_range_names_loader_chunk_rows(rows: Any) -> None:
    err = config_error(minimal(loader={"chunk-rows": rows}))
    assert err.key == "loader.chunk-rows"
    assert "1 to 1000000" in err.message


@pytest.mark.parametrize("rows", [1, 1_000_000])
def test_loader_chunk_rows_bounds_are_accepted(rows: int) -> None:
    assert parse_task(minimal(loader={"chunk-rows": rows})).chunk_rows == rows


def test_syncer_batch_out_of_range_names_syncer_batch() -> None:
    assert config_error(minimal(syncer={"batch": 100_001})).key == "syncer.batch"
    assert parse_task(minimal(syncer={"batch": 7})).batch_rows == 7


def test_loader_must_be_a_mapping() -> None:
    assert config_error(minimal(loader=[1])).key == "loader"


def test_safe_mode_must_be_a_boolean() -> None:
    assert config_error(minimal(**{"safe-mode": "yes"})).key == "safe-mode"
    assert parse_task(minimal(**{"safe-mode": True})).safe_mode is True


def test_meta_schema_must_be_an_identifier() -> None:
    assert config_error(minimal(**{"meta-schema": "dm meta"})).key == "meta-schema"


def test_text_that_is_not_yaml_is_refused() -> None:
    with pytest.raises(TaskConfigError, match="not valid YAML"):
        parse_task_yaml("name: [unclosed\n  target: {")


@pytest.mark.parametrize("text", ["- a\n- b\n", "just text\n", "", "42\n"])
def test_yaml_that_is_not_a_mapping_names_the_document(text: str) -> None:
    with pytest.raises(TaskConfigError) as info:
        parse_task_yaml(text)
    assert info.value.key == "(document)"
    assert "want a mapping" in info.value.message


def test_non_string_key_is_refused() -> None:
    assert config_error({**minimal(), 1: "x"}).key == "1"


def test_oversized_task_file_is_refused_before_parsing() -> None:
    with pytest.raises(TaskConfigError, match="larger than"):
        parse_task_yaml("#" * (migration.spec.MAX_YAML_BYTES + 1))


def test_yaml_round_trip_of_minimal_task() -> None:
    assert parse_task_yaml(yaml.safe_dump(minimal())) == parse_task(minimal())


# -- block-allow-list -------------------------------------------------------------------------


def test_empty_block_allow_list_allows_user_tables() -> None:
    assert BlockAllowList().allows("app", "orders")


@pytest.mark.parametrize("db", sorted(SYSTEM_SCHEMAS))
def test_system_schemas_are_always_refused(db: str) -> None:
    assert not BlockAllowList().allows(db, "user")
    assert not BlockAllowList(do_dbs=("*",), do_tables=(TableRef("*", "*"),)).allows(db, "user")


def test_do_dbs_allows_only_matching_schemas() -> None:
    bal = BlockAllowList(do_dbs=("shard_db_*", "exact"))
    assert bal.allows("shard_db_1", "t")
    assert bal.allows("exact", "t")
    assert not bal.allows("exactly", "t")
    assert not bal.allows("other", "t")


def test_ignore_dbs_wins_over_do_dbs() -> None:
    bal = BlockAllowList(do_dbs=("shard_*",), ignore_dbs=("shard_tmp",))
    assert bal.allows("shard_1", "t")
    assert not bal.allows("shard_tmp", "t")


def test_question_mark_matches_exactly_one_character() -> None:
    bal = BlockAllowList(do_dbs=("db_?",))
    assert bal.allows("db_1", "t")
    assert not bal.allows("db_12", "t")
    assert not bal.allows("db_", "t")


def test_patterns_are_case_sensitive() -> None:
    assert not BlockAllowList(do_dbs=("App",)).allows("app", "t")


def test_do_tables_allow_only_listed_tables() -> None:
    bal = BlockAllowList(do_tables=(TableRef("app", "order?"), TableRef("log*", "*")))
    assert bal.allows("app", "orders")
    assert not bal.allows("app", "order")
    assert not bal.allows("app", "users")
    assert bal.allows("logs_2024", "anything")


def test_ignore_tables_refuse_listed_tables_only() -> None:
    bal = BlockAllowList(ignore_tables=(TableRef("app", "tmp_*"),))
    assert not bal.allows("app", "tmp_1")
    assert bal.allows("app", "orders")
    assert bal.allows("other", "tmp_1")


def test_parsed_table_ref_without_tbl_name_means_every_table() -> None:
    spec = parse_task(minimal(**{"block-allow-list": {"ignore-tables": [{"db-name": "junk"}]}}))
    assert spec.block_allow_list.ignore_tables == (TableRef("junk", "*"),)
    assert not spec.allows("junk", "anything")
    assert spec.allows("app", "anything")


def test_task_never_allows_its_meta_schema() -> None:
    spec = task(meta_schema="dm_meta")
    assert not spec.allows("dm_meta", "t_syncer_checkpoint")
    assert spec.allows("app", "t")


# -- routes -----------------------------------------------------------------------------------

SCHEMA_RULE = Route(0, "shard_db_*", "", "merged_db", "")
TABLE_RULE = Route(1, "shard_db_*", "orders_*", "merged_db", "orders")


def test_route_without_match_is_identity() -> None:
    spec = task([SCHEMA_RULE, TABLE_RULE])
    assert spec.route("other", "orders_1") == ("other", "orders_1")
    assert task().route("a", "b") == ("a", "b")


def test_schema_rule_renames_the_schema_and_keeps_the_table() -> None:
    assert task([SCHEMA_RULE]).route("shard_db_2", "users") == ("merged_db", "users")


def test_table_rule_takes_precedence_over_an_earlier_schema_rule() -> None:
    spec = task([SCHEMA_RULE, TABLE_RULE])
    assert spec.route("shard_db_2", "orders_7") == ("merged_db", "orders")
    assert spec.matching_routes("shard_db_2", "orders_7") == [TABLE_RULE]
    assert spec.matching_routes("shard_db_2", "users") == [SCHEMA_RULE]


def test_table_rule_without_target_table_keeps_the_table_name() -> None:
    rule = Route(0, "a", "t*", "b", "")
    assert task([rule]).route("a", "t1") == ("b", "t1")


def test_matching_routes_lists_every_claiming_table_rule() -> None:
    other = Route(2, "shard_db_1", "orders_?", "x", "y")
    spec = task([SCHEMA_RULE, TABLE_RULE, other])
    assert spec.matching_routes("shard_db_1", "orders_1") == [TABLE_RULE, other]
    assert spec.route("shard_db_1", "orders_1") == ("merged_db", "orders")
    assert spec.matching_routes("nope", "t") == []


def test_route_schema_follows_schema_rules_only() -> None:
    spec = task([TABLE_RULE, SCHEMA_RULE])
    assert spec.route_schema("shard_db_1") == "merged_db"
    assert task([TABLE_RULE]).route_schema("shard_db_1") == "shard_db_1"
    assert spec.route_schema("other") == "other"


def test_merges_by_pattern_only_for_wildcard_table_rules() -> None:
    spec = task([SCHEMA_RULE, TABLE_RULE, Route(2, "a", "t", "b", "u")])
    assert spec.merges_by_pattern("merged_db", "orders")
    assert not spec.merges_by_pattern("merged_db", "users")  # a schema rule's table
    assert not spec.merges_by_pattern("b", "u")  # a plain rename, no wildcard
    assert not spec.merges_by_pattern("orders", "merged_db")


def test_merges_by_pattern_counts_a_wildcard_in_the_schema_pattern_alone() -> None:
    assert task([Route(0, "db_?", "t", "d", "t")]).merges_by_pattern("d", "t")


def test_route_key_names_its_index() -> None:
    spec = parse_task(
        minimal(
            routes=[
                {"schema-pattern": "a", "target-schema": "x"},
                {"schema-pattern": "b", "table-pattern": "t*", "target-schema": "y",
                 "target-table": "t"},
            ]
        )
    )  # fmt: skip
    assert [r.key for r in spec.routes] == ["routes[0]", "routes[1]"]
    assert [r.is_table_rule for r in spec.routes] == [False, True]


# -- properties -------------------------------------------------------------------------------

_ident = st.text(alphabet="abcxyz_019", min_size=1, max_size=8)
_pattern = st.text(alphabet="abc_*?", min_size=1, max_size=6)


@settings(max_examples=200, deadline=None)
@given(db=_ident, table=_ident, sp=_pattern, tp=_pattern, ts=_ident, tt=_ident, other=_pattern)
def test_route_of_a_table_matched_by_a_table_rule_is_that_rules_target(
    db: str, table: str, sp: str, tp: str, ts: str, tt: str, other: str
) -> None:
    rule = Route(1, sp, tp, ts, tt)
    # A schema rule listed first never beats a table rule.
    spec = task([Route(0, other, "", "elsewhere", ""), rule])
    if rule.matches(db, table):
        assert spec.route(db, table) == (ts, tt)
    elif not fnmatch_db(other, db):
        assert spec.route(db, table) == (db, table)


def fnmatch_db(pattern: str, db: str) -> bool:
    import fnmatch

    return fnmatch.fnmatchcase(db, pattern)


@settings(max_examples=200, deadline=None)
@given(
    db=_ident, table=_ident, do=st.lists(_pattern, max_size=3), ign=st.lists(_pattern, max_size=3)
)
def test_allows_is_do_dbs_and_not_ignore_dbs(
    db: str, table: str, do: list[str], ign: list[str]
) -> None:
    bal = BlockAllowList(do_dbs=tuple(do), ignore_dbs=tuple(ign))
    expected = (not do or any(fnmatch_db(p, db) for p in do)) and not any(
        fnmatch_db(p, db) for p in ign
    )
    assert bal.allows(db, table) == expected


@settings(max_examples=100, deadline=None)
@given(name=st.from_regex(r"[A-Za-z][A-Za-z0-9_-]{0,47}", fullmatch=True))
def test_every_name_of_the_documented_shape_is_accepted(name: str) -> None:
    assert parse_task(minimal(name=name)).name == name
