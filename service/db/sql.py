"""SQL expressions that differ by dialect, compiled for SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import QueryableAttribute
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import ColumnElement, FunctionElement

SqlDatetime = ColumnElement[Any] | QueryableAttribute[Any]


class seconds_between(FunctionElement[float]):  # noqa: N801 (reads as a SQL function)
    """``end - start`` in seconds, as a float (NULL when either is NULL)."""

    type = sa.Float()
    inherit_cache = True
    name = "seconds_between"

    def __init__(self, start: SqlDatetime, end: SqlDatetime) -> None:
        super().__init__(start, end)


@compiles(seconds_between, "postgresql")
def _seconds_between_postgresql(element: seconds_between, compiler: SQLCompiler, **kw: Any) -> str:
    start, end = (compiler.process(c, **kw) for c in element.clauses)
    return f"EXTRACT(EPOCH FROM ({end} - {start}))"


@compiles(seconds_between, "sqlite")
def _seconds_between_sqlite(element: seconds_between, compiler: SQLCompiler, **kw: Any) -> str:
    start, end = (compiler.process(c, **kw) for c in element.clauses)
    return f"((julianday({end}) - julianday({start})) * 86400.0)"
