"""Statements for the per-request hot path, run straight on the driver's cursor.

SQLAlchemy's per-execution bookkeeping (execution context, parameter and result handling) costs
more than the indexed statements GetRecommendations and the group committers run on every call
(bench/recommend_latency.py, bench/group_commit.py). This module is the one place where recgrpc
runs SQL on the driver's cursor itself (besides the per-connection set-up statements in
``db.sqlite`` and ``db.postgres``). A ``Prepared`` statement is a
Core statement compiled once per dialect; its values still pass through each column type's own
bind and result processors, so what is stored and read back is exactly what SQLAlchemy would
store and read. It runs on the caller's connection, inside whatever transaction the caller began.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Connection, Dialect, bindparam
from sqlalchemy import exc as sa_exc
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import ReturnsRows
from sqlalchemy.types import TypeEngine

Processor = Callable[[Any], Any] | None


def bind_processor(type_: TypeEngine[Any], dialect: Dialect) -> Processor:
    """How SQLAlchemy converts a value of ``type_`` for ``dialect``'s driver."""
    processor: Processor = type_.dialect_impl(dialect).bind_processor(dialect)
    return processor


def result_processor(type_: TypeEngine[Any], dialect: Dialect, type_code: Any) -> Processor:
    """How SQLAlchemy converts what ``dialect``'s driver returns for ``type_``."""
    processor: Processor = type_.dialect_impl(dialect).result_processor(dialect, type_code)
    return processor


@dataclass(frozen=True)
class _Compiled:
    sql: str
    names: tuple[str, ...]
    positional: bool
    binds: tuple[Processor, ...]
    result_types: tuple[TypeEngine[Any], ...]
    fixed: Mapping[str, Any]
    """Values the statement carries itself (``.values(flag=True)``), not given per call."""

    def parameters(self, values: Mapping[str, Any]) -> tuple[Any, ...] | dict[str, Any]:
        if self.fixed:
            values = {**self.fixed, **values}
        converted = [
            values[name] if process is None else process(values[name])
            for name, process in zip(self.names, self.binds, strict=True)
        ]
        if self.positional:
            return tuple(converted)
        return dict(zip(self.names, converted, strict=True))


def _converter(processors: Sequence[Processor]) -> Callable[[Sequence[Any]], tuple[Any, ...]]:
    """A row converter that touches only the columns with a processor (the others are passed
    as the driver gave them, as SQLAlchemy would)."""
    converting = [(i, process) for i, process in enumerate(processors) if process is not None]
    if len(converting) == 1:
        ((only, convert),) = converting

        def one(raw: Sequence[Any]) -> tuple[Any, ...]:
            row = list(raw)
            value = row[only]
            if value is not None:
                row[only] = convert(value)
            return tuple(row)

        return one

    def row(raw: Sequence[Any]) -> tuple[Any, ...]:
        values = list(raw)
        for i, process in converting:
            value = values[i]
            if value is not None:
                values[i] = process(value)
        return tuple(values)

    return row


class Prepared:
    """A Core statement compiled once per dialect, executed on the DBAPI cursor.

    Statements must not use expanding ``IN`` parameters. Thread-safe: compiled forms are
    immutable and a racing first compilation only computes the same thing twice.
    """

    def __init__(self, statement: ClauseElement | Callable[[str], ClauseElement]) -> None:
        # A callable builds the statement for a dialect name (e.g. dialect-specific ON CONFLICT).
        self._statement = statement
        self._by_dialect: dict[str, _Compiled] = {}
        # Result processors per dialect, made from the first result's column type codes (some
        # drivers' processors depend on them); None when no column needs converting.
        self._converters: dict[str, Callable[[Sequence[Any]], tuple[Any, ...]] | None] = {}

    def _compiled(self, dialect: Dialect) -> _Compiled:
        found = self._by_dialect.get(dialect.name)
        if found is not None:
            return found
        statement = self._statement
        if not isinstance(statement, ClauseElement):
            statement = statement(dialect.name)
        compiled = cast(SQLCompiler, statement.compile(dialect=dialect))
        positiontup = compiled.positiontup
        # The names the SQL refers to, in order for positional drivers (not every entry of
        # compiled.binds is rendered: an UPDATE's values can appear there twice).
        names = (
            tuple(positiontup)
            if positiontup is not None
            else tuple(dict.fromkeys(compiled.bind_names.values()))
        )
        types = {key: bind.type for key, bind in compiled.binds.items()}
        result_types: tuple[TypeEngine[Any], ...] = ()
        if isinstance(statement, ReturnsRows):  # a SELECT, or DML with RETURNING
            result_types = tuple(column.type for column in statement.exported_columns)
        found = _Compiled(
            sql=compiled.string,
            names=names,
            positional=positiontup is not None,
            binds=tuple(bind_processor(types[name], dialect) for name in names),
            result_types=result_types,
            fixed={
                name: bind.value
                for bind, name in compiled.bind_names.items()
                if not bind.required and name in names
            },
        )
        self._by_dialect[dialect.name] = found
        return found

    def rows(
        self, connection: Connection, values: Mapping[str, Any], *, convert: int | None = None
    ) -> list[tuple[Any, ...]]:
        """Run a SELECT (or DML with RETURNING) and return its rows, converted as SQLAlchemy
        would.

        With ``convert``, only the first ``convert`` rows are converted; later rows come as the
        driver gave them (for a long history where only the newest rows' times are needed,
        columns without a processor are the same either way).
        """
        fetched, convert_row = self._run(connection, values, many=False)
        if convert_row is None:
            return fetched
        if convert is None or convert >= len(fetched):
            return [convert_row(row) for row in fetched]
        return [convert_row(row) for row in fetched[:convert]] + fetched[convert:]

    def execute(self, connection: Connection, values: Mapping[str, Any]) -> None:
        """Run an INSERT, UPDATE or DELETE once."""
        self._run(connection, values, many=False)

    def execute_many(self, connection: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
        """Run an INSERT, UPDATE or DELETE once per parameter set."""
        if rows:
            self._run(connection, rows, many=True)

    def execute_columns(self, connection: Connection, columns: Mapping[str, Sequence[Any]]) -> None:
        """Run an INSERT once per row of ``columns`` (equal-length values by name), for a
        positional driver: each column is converted in one pass and no per-row mapping is
        built (what ``execute_many`` does row by row)."""
        compiled = self._compiled(connection.dialect)
        if not compiled.positional or compiled.fixed:
            raise NotImplementedError("execute_columns takes every value, positionally")
        converted = [
            columns[name] if process is None else list(map(process, columns[name]))
            for name, process in zip(compiled.names, compiled.binds, strict=True)
        ]
        rows = list(zip(*converted, strict=True))
        if rows:
            self._run(connection, rows, many=True, converted=True)

    def _run(
        self, connection: Connection, values: Any, *, many: bool, converted: bool = False
    ) -> tuple[list[Any], Callable[[Sequence[Any]], tuple[Any, ...]] | None]:
        dialect = connection.dialect
        compiled = self._compiled(dialect)
        driver: Any = connection.connection.dbapi_connection
        cursor = driver.cursor()
        params: Any = None
        try:
            if many:
                params = values if converted else [compiled.parameters(row) for row in values]
                cursor.executemany(compiled.sql, params)
                return [], None
            params = compiled.parameters(values)
            cursor.execute(compiled.sql, params)
            description = cursor.description
            if description is None:  # no result rows (an INSERT without RETURNING)
                return [], None
            fetched = cursor.fetchall()
        except dialect.loaded_dbapi.Error as exc:
            # What SQLAlchemy does for its own executions: wrap the driver's error in its
            # exception hierarchy, and drop a connection the server closed from the pool.
            invalidated = dialect.is_disconnect(exc, driver, cursor)
            if invalidated:
                # After a disconnect the idle connections are as dead as this one: drop this
                # one and replace the pool (public API; SQLAlchemy itself marks the pool stale),
                # so the following requests reconnect instead of failing one by one.
                connection.invalidate(exc)
                connection.engine.dispose()
            raise sa_exc.DBAPIError.instance(
                compiled.sql,
                params,
                exc,
                dialect.loaded_dbapi.Error,
                connection_invalidated=invalidated,
                dialect=dialect,
            ) from exc
        finally:
            cursor.close()
        if not compiled.result_types:  # text without declared columns: as the driver gives them
            return fetched, None
        if dialect.name not in self._converters:
            processors = [
                result_processor(type_, dialect, column[1])
                for type_, column in zip(compiled.result_types, description, strict=True)
            ]
            self._converters[dialect.name] = _converter(processors) if any(processors) else None
        return fetched, self._converters[dialect.name]


class PreparedInsert:
    """A multi-row ``INSERT ... VALUES (...), (...)`` compiled once per dialect and row count.

    One statement per chunk of rows instead of one execution per row: on PostgreSQL an
    executemany costs a protocol exchange per row in the driver, several times the insert itself
    for the dozen rows a served list stores. ``build`` makes the INSERT for a dialect name (so
    ON CONFLICT clauses can be dialect-specific); its VALUES are filled in here.
    """

    CHUNK = 100
    """Rows per statement (bounds the bound parameters, under SQLite's limit)."""

    def __init__(self, build: Callable[[str], Any], columns: Sequence[str]) -> None:
        self._build = build
        self._columns = tuple(columns)
        self._by_size: dict[int, Prepared] = {}

    def _prepared(self, size: int) -> Prepared:
        found = self._by_size.get(size)
        if found is None:

            def statement(dialect: str) -> ClauseElement:
                insert = self._build(dialect)
                table = insert.table
                values = [
                    {c: bindparam(f"{c}__{i}", type_=table.c[c].type) for c in self._columns}
                    for i in range(size)
                ]
                built: ClauseElement = insert.values(values)
                return built

            found = self._by_size[size] = Prepared(statement)
        return found

    def insert(
        self, connection: Connection, rows: Sequence[Mapping[str, Any]]
    ) -> list[tuple[Any, ...]]:
        """Insert ``rows``; returns what the statement's RETURNING clause gave, if it has one."""
        returned: list[tuple[Any, ...]] = []
        for start in range(0, len(rows), self.CHUNK):
            chunk = rows[start : start + self.CHUNK]
            flat = {f"{c}__{i}": row[c] for i, row in enumerate(chunk) for c in self._columns}
            returned.extend(self._prepared(len(chunk)).rows(connection, flat))
        return returned
