"""Pieces of the PostgreSQL statements that do a whole transition in one round trip.

Each builder returns one data-modifying CTE (``name AS (...)``) and its parameters; the store's
functions chain them into ``WITH ... SELECT`` statements whose every part is conditional on the
one before it (an ``INSERT ... SELECT ... FROM moved`` inserts nothing when the run did not move),
so a statement either makes the whole transition or writes nothing. Only the PostgreSQL fast paths
use them; other databases run the same transitions as several statements in one transaction.
"""

from __future__ import annotations

from typing import Any, cast

from django.db.models import Model
from django.db.models.sql import UpdateQuery

from ..models import RunStatus, WorkflowRun


def move_run(
    name: str,
    run: WorkflowRun,
    fields: dict[str, Any],
    connection: Any,
    *,
    when: str = "",
    when_params: tuple[Any, ...] = (),
) -> tuple[str, list[Any]]:
    """``name AS (UPDATE run ... RETURNING 1)``: the run's conditional move to its next version.

    ``when``: an SQL condition the move also needs (on an earlier CTE of the statement).
    """
    query = WorkflowRun.objects.filter(pk=run.pk, version=run.version, status=RunStatus.RUNNING).query
    update = cast(UpdateQuery, query.chain(UpdateQuery))
    update.add_update_values({"version": run.version + 1, **fields})
    sql, params = update.get_compiler(connection.alias).as_sql()
    if when:
        sql += f" AND {when}"
    return f"{name} AS ({sql} RETURNING 1)", [*params, *when_params]


def insert_row(name: str, obj: Model, source: str, connection: Any, *, returning: str = "") -> tuple[str, list[Any]]:
    """``name AS (INSERT INTO table (...) SELECT <obj's values> FROM source)``: ``obj``'s row, once per
    row of ``source`` (one, or none when the transition lost its race)."""
    model = type(obj)
    columns = [f for f in model._meta.concrete_fields if not f.primary_key]
    qn = connection.ops.quote_name
    values = ", ".join(f"%s::{f.db_type(connection)}" for f in columns)
    sql = (
        f"{name} AS (INSERT INTO {qn(model._meta.db_table)} ({', '.join(qn(f.column) for f in columns)}) "
        f"SELECT {values} FROM {source}{f' RETURNING {returning}' if returning else ''})"
    )
    return sql, [f.get_db_prep_save(f.pre_save(obj, True), connection) for f in columns]
