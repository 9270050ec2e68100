"""Typed reads from JSON columns, compiled for SQLite and PostgreSQL.

Filters on ``calls.custom`` and ``users.teams`` read the JSON column itself (members' and users'
``custom`` go through the indexed side tables instead, see ``customindex.py``). SQLAlchemy's
generic JSON accessors cast blindly (on PostgreSQL ``CAST(x #>> path AS FLOAT)`` fails on a
string), so these constructs check the JSON type first and yield NULL on a mismatch, the way a
side-table lookup would simply find nothing:

- ``JsonText(col, path)``: the string at ``path``, else NULL;
- ``JsonNumber(col, path)``: the number at ``path`` (booleans as 1/0), else NULL;
- ``JsonPresent(col, path)``: true when ``path`` exists (also when it holds ``null``);
- ``JsonIsNull(col, path)``: true when ``path`` holds ``null``;
- ``JsonArrayHasAny(col, values)``: true when the array in ``col`` has one of ``values``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Boolean, Float, String, bindparam
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.types import Text, TypeEngine

from appliance.errors import InvalidRequest


class _JsonPath(ColumnElement[Any]):
    inherit_cache = False
    type: TypeEngine[Any]

    def __init__(self, column: ColumnElement[Any], path: Sequence[str]) -> None:
        for key in path:
            if '"' in key or "\x00" in key or not key:
                where = f"filter_conditions.custom.{'.'.join(path)}"
                raise InvalidRequest(f"{where}: keys may not contain '\"'", field=where)
        self.column = column
        self.path = tuple(path)


class JsonText(_JsonPath):
    inherit_cache = False
    type = String()


class JsonNumber(_JsonPath):
    inherit_cache = False
    type = Float()


class JsonPresent(_JsonPath):
    inherit_cache = False
    type = Boolean()


class JsonIsNull(_JsonPath):
    inherit_cache = False
    type = Boolean()


class JsonArrayHasAny(ColumnElement[bool]):
    inherit_cache = False
    type = Boolean()

    def __init__(self, column: ColumnElement[Any], values: Sequence[str]) -> None:
        self.column = column
        self.values = tuple(values)


def _sqlite_path(compiler: SQLCompiler, element: _JsonPath, **kw: Any) -> tuple[str, str]:
    col = compiler.process(element.column, **kw)
    jpath = "$" + "".join(f'."{k}"' for k in element.path)
    return col, compiler.process(bindparam(None, jpath, type_=String()), **kw)


def _pg_path(compiler: SQLCompiler, element: _JsonPath, **kw: Any) -> tuple[str, str]:
    col = compiler.process(element.column, **kw)
    param = compiler.process(bindparam(None, list(element.path), type_=ARRAY(Text())), **kw)
    return col, param


@compiles(JsonText, "sqlite")
def _text_sqlite(element: JsonText, compiler: SQLCompiler, **kw: Any) -> str:
    col, p = _sqlite_path(compiler, element, **kw)
    return f"(CASE WHEN json_type({col}, {p}) = 'text' THEN json_extract({col}, {p}) END)"


@compiles(JsonText, "postgresql")
def _text_pg(element: JsonText, compiler: SQLCompiler, **kw: Any) -> str:
    col, p = _pg_path(compiler, element, **kw)
    return f"(CASE WHEN json_typeof({col} #> {p}) = 'string' THEN {col} #>> {p} END)"


@compiles(JsonNumber, "sqlite")
def _num_sqlite(element: JsonNumber, compiler: SQLCompiler, **kw: Any) -> str:
    col, p = _sqlite_path(compiler, element, **kw)
    return (
        f"(CASE json_type({col}, {p}) WHEN 'integer' THEN json_extract({col}, {p}) "
        f"WHEN 'real' THEN json_extract({col}, {p}) WHEN 'true' THEN 1.0 "
        f"WHEN 'false' THEN 0.0 END)"
    )


@compiles(JsonNumber, "postgresql")
def _num_pg(element: JsonNumber, compiler: SQLCompiler, **kw: Any) -> str:
    col, p = _pg_path(compiler, element, **kw)
    return (
        f"(CASE json_typeof({col} #> {p}) WHEN 'number' THEN CAST({col} #>> {p} AS FLOAT8) "
        f"WHEN 'boolean' THEN (CASE WHEN {col} #>> {p} = 'true' THEN 1.0 ELSE 0.0 END) END)"
    )


@compiles(JsonPresent, "sqlite")
def _present_sqlite(element: JsonPresent, compiler: SQLCompiler, **kw: Any) -> str:
    col, p = _sqlite_path(compiler, element, **kw)
    return f"(json_type({col}, {p}) IS NOT NULL)"


@compiles(JsonPresent, "postgresql")
def _present_pg(element: JsonPresent, compiler: SQLCompiler, **kw: Any) -> str:
    col, p = _pg_path(compiler, element, **kw)
    return f"(({col} #> {p}) IS NOT NULL)"


@compiles(JsonIsNull, "sqlite")
def _isnull_sqlite(element: JsonIsNull, compiler: SQLCompiler, **kw: Any) -> str:
    col, p = _sqlite_path(compiler, element, **kw)
    return f"(json_type({col}, {p}) = 'null')"


@compiles(JsonIsNull, "postgresql")
def _isnull_pg(element: JsonIsNull, compiler: SQLCompiler, **kw: Any) -> str:
    col, p = _pg_path(compiler, element, **kw)
    return f"(json_typeof({col} #> {p}) = 'null')"


def _values(compiler: SQLCompiler, values: Sequence[str], **kw: Any) -> str:
    return ", ".join(compiler.process(bindparam(None, v, type_=String()), **kw) for v in values)


@compiles(JsonArrayHasAny, "sqlite")
def _has_any_sqlite(element: JsonArrayHasAny, compiler: SQLCompiler, **kw: Any) -> str:
    if not element.values:
        return "(1 = 0)"
    col = compiler.process(element.column, **kw)
    return (
        f"(json_type({col}) = 'array' AND EXISTS (SELECT 1 FROM json_each({col}) AS je "
        f"WHERE je.type = 'text' AND je.value IN ({_values(compiler, element.values, **kw)})))"
    )


@compiles(JsonArrayHasAny, "postgresql")
def _has_any_pg(element: JsonArrayHasAny, compiler: SQLCompiler, **kw: Any) -> str:
    if not element.values:
        return "(1 = 0)"
    col = compiler.process(element.column, **kw)
    safe = f"(CASE WHEN json_typeof({col}) = 'array' THEN {col} ELSE CAST('[]' AS JSON) END)"
    return (
        f"(EXISTS (SELECT 1 FROM json_array_elements_text({safe}) AS je(v) "
        f"WHERE je.v IN ({_values(compiler, element.values, **kw)})))"
    )
