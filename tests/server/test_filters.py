"""Parsing and validation of filter_conditions, sort and limit (no database)."""

from __future__ import annotations

from typing import Any

import pytest

from appliance.calls.filters import (
    CALLS,
    MEMBERS,
    USERS,
    Condition,
    Group,
    Kind,
    SortKey,
    parse_filter,
    parse_limit,
    parse_query,
    parse_sort,
    parse_time_ns,
)
from appliance.errors import InvalidRequest


def test_implicit_eq_and_operators_on_one_field() -> None:
    node = parse_filter(MEMBERS, {"role": "admin"})
    assert node == Condition("role", "$eq", "admin", Kind.TEXT, None, "filter_conditions.role")
    node = parse_filter(MEMBERS, {"custom.floor": {"$gte": 2, "$lt": 5}})
    assert isinstance(node, Group) and node.op == "$and"
    assert [(c.field, c.path, c.op, c.value) for c in node.items if isinstance(c, Condition)] == [
        ("custom", "floor", "$gte", 2),
        ("custom", "floor", "$lt", 5),
    ]


def test_groups_nest_and_keep_their_order() -> None:
    node = parse_filter(
        MEMBERS,
        {"$or": [{"user_id": "a"}, {"$and": [{"role": "host"}, {"user.custom.shift": "night"}]}]},
    )
    assert isinstance(node, Group) and node.op == "$or"
    first, second = node.items
    assert isinstance(first, Condition) and first.value == "a"
    assert isinstance(second, Group) and second.op == "$and"
    last = second.items[1]
    assert isinstance(last, Condition) and (last.field, last.path) == ("user.custom", "shift")
    nor = parse_filter(USERS, {"$nor": [{"role": "admin"}]})
    assert isinstance(nor, Group) and nor.op == "$nor"


def test_every_operator_is_accepted_on_custom_fields() -> None:
    for op, value in [
        ("$eq", "x"),
        ("$ne", 1),
        ("$in", ["a", 2, True, None]),
        ("$nin", ["a"]),
        ("$gt", 1.5),
        ("$gte", "m"),
        ("$lt", 3),
        ("$lte", 3),
        ("$exists", False),
    ]:
        node = parse_filter(MEMBERS, {"custom.x": {op: value}})
        assert isinstance(node, Condition) and node.op == op
    node = parse_filter(MEMBERS, {"custom.x": {"$in": ["a", 2]}})
    assert isinstance(node, Condition) and node.value == ("a", 2)


def test_times_are_nanoseconds() -> None:
    assert parse_time_ns("2026-01-02T03:04:05.123456789Z", "t") == 1767323045123456789
    assert parse_time_ns("2026-01-02T04:04:05+01:00", "t") == 1767323045000000000
    assert parse_time_ns(1767323045123456789, "t") == 1767323045123456789
    node = parse_filter(CALLS, {"starts_at": {"$gt": "2026-01-02T03:04:05Z"}})
    assert isinstance(node, Condition) and node.value == 1767323045000000000
    node = parse_filter(CALLS, {"ended_at": None})
    assert isinstance(node, Condition) and node.value is None


@pytest.mark.parametrize(
    ("entity", "conditions", "field", "problem"),
    [
        (MEMBERS, {"colour": "red"}, "filter_conditions.colour", "unknown field"),
        (MEMBERS, {"role": {"$regex": "x"}}, "filter_conditions.role.$regex", "unknown operator"),
        (MEMBERS, {"$xor": []}, "filter_conditions.$xor", "unknown operator"),
        (
            MEMBERS,
            {"$or": [{"role": "a"}, {"size": 1}]},
            "filter_conditions.$or[1].size",
            "unknown",
        ),
        (MEMBERS, {"$or": []}, "filter_conditions.$or", "non-empty list"),
        (MEMBERS, {"$and": {"role": "a"}}, "filter_conditions.$and", "non-empty list"),
        (MEMBERS, {"role": {"$in": "host"}}, "filter_conditions.role.$in", "must be a list"),
        (MEMBERS, {"role": 3}, "filter_conditions.role.$eq", "must be a string"),
        (MEMBERS, {"role": None}, "filter_conditions.role.$eq", "null"),
        (MEMBERS, {"role": {"colour": 1}}, "filter_conditions.role", "operator object"),
        (MEMBERS, {"custom.": 1}, "filter_conditions.custom.", "empty part"),
        (MEMBERS, {"custom.a..b": 1}, "filter_conditions.custom.a..b", "empty part"),
        (MEMBERS, {"custom.a": {"$gt": True}}, "filter_conditions.custom.a.$gt", "range"),
        (MEMBERS, {"custom.a": {"b": 1}}, "filter_conditions.custom.a", "operator object"),
        (MEMBERS, {"custom.a": [1, 2]}, "filter_conditions.custom.a.$eq", "string, number"),
        (MEMBERS, {"created_at": {"$gt": "yesterday"}}, "filter_conditions.created_at.$gt", "RFC"),
        (
            MEMBERS,
            {"created_at": "2026-01-02T03:04:05"},
            "filter_conditions.created_at.$eq",
            "zone",
        ),
        (MEMBERS, {"custom.a": {"$exists": 1}}, "filter_conditions.custom.a.$exists", "true or"),
        (CALLS, {"ongoing": {"$gt": True}}, "filter_conditions.ongoing.$gt", "not supported"),
        (CALLS, {"ongoing": "yes"}, "filter_conditions.ongoing.$eq", "true or false"),
        (CALLS, {"members": {"$gt": "a"}}, "filter_conditions.members.$gt", "not supported"),
        (CALLS, {"user_id": "a"}, "filter_conditions.user_id", "unknown field"),
        (USERS, {"user.custom.a": 1}, "filter_conditions.user.custom.a", "unknown field"),
        (USERS, {"online": {"$in": [True]}}, "filter_conditions.online.$in", "not supported"),
        (USERS, [1], "filter_conditions", "must be an object"),
        (MEMBERS, {"custom.a": 10**400}, "filter_conditions.custom.a.$eq", "out of range"),
        (MEMBERS, {"custom.a": float("inf")}, "filter_conditions.custom.a.$eq", "finite"),
        (MEMBERS, {"custom.a": float("nan")}, "filter_conditions.custom.a.$eq", "finite"),
        (MEMBERS, {"created_at": 2**64}, "filter_conditions.created_at.$eq", "out of range"),
        (
            MEMBERS,
            {"created_at": "9999-01-01T00:00:00Z"},
            "filter_conditions.created_at.$eq",
            "range",
        ),
        (MEMBERS, {"role": "a\x00b"}, "filter_conditions.role.$eq", "NUL"),
        (MEMBERS, {"role\x00": "a"}, "filter_conditions", "NUL"),
        (MEMBERS, {"role": "x" * 5000}, "filter_conditions.role.$eq", "longer than"),
    ],
)
def test_mistakes_name_the_field(entity: Any, conditions: Any, field: str, problem: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_filter(entity, conditions)
    assert info.value.field == field
    assert str(info.value).startswith(f"{field}: ")
    assert problem in str(info.value)
    assert info.value.status_code == 400


def test_too_many_conditions_and_values_are_refused() -> None:
    with pytest.raises(InvalidRequest, match="more than 1000 values"):
        parse_filter(MEMBERS, {"user_id": {"$in": [str(i) for i in range(1001)]}})
    many = {"$and": [{"role": str(i)} for i in range(101)]}
    with pytest.raises(InvalidRequest, match="more than 100 conditions"):
        parse_filter(MEMBERS, many)
    deep: dict[str, Any] = {"role": "a"}
    for _ in range(10):
        deep = {"$and": [deep]}
    with pytest.raises(InvalidRequest, match="deeper"):
        parse_filter(MEMBERS, deep)


def test_sort_forms_and_mistakes() -> None:
    assert parse_sort(
        MEMBERS, [{"field": "created_at", "direction": -1}, {"field": "user_id"}]
    ) == (
        SortKey("created_at", -1),
        SortKey("user_id", 1),
    )
    # What the getstream SDK sends: every key present, unset ones null.
    assert parse_sort(CALLS, [{"field": "starts_at", "direction": None, "type": None}]) == (
        SortKey("starts_at", 1),
    )
    for sort, field in [
        ([{"field": "colour", "direction": 1}], "sort[0].field"),
        ([{"field": "user_id", "direction": 0}], "sort[0].direction"),
        ([{"field": "user_id", "direction": True}], "sort[0].direction"),
        ([{"direction": 1}], "sort[0].field"),
        ([{"field": "user_id", "colour": 1}], "sort[0].colour"),
        ([{"field": "user_id"}, {"field": "user_id"}], "sort[1].field"),
        ({"field": "user_id"}, "sort"),
        (["user_id"], "sort[0]"),
    ]:
        with pytest.raises(InvalidRequest) as info:
            parse_sort(MEMBERS, sort)
        assert info.value.field == field, sort


def test_limit() -> None:
    assert parse_limit(None) == 25
    assert parse_limit(0) == 25
    assert parse_limit(100) == 100
    for bad in (101, -1, "10", 2.5, True):
        with pytest.raises(InvalidRequest) as info:
            parse_limit(bad)
        assert info.value.field == "limit"


def test_parse_query_defaults() -> None:
    q = parse_query(MEMBERS, None, None, None, default_sort=(SortKey("created_at", 1),))
    assert q.filter is None and q.limit == 25 and q.sort == (SortKey("created_at", 1),)
    assert parse_query(MEMBERS, {}, [], 5).filter is None
