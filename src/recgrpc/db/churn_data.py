"""Churn queries: per-user activity aggregates as of a time, labels and predictions.

Every aggregate is one grouped, set-based query whose only user filter is optional: serving
passes one user id (the ``(user_id, occurred_at)``-style indexes then bound the scan to that
user's rows), training passes none and gets every user at the cut-off in the same query. The SQL
is therefore identical for both, which is what keeps training and serving features in step.
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVarTuple

from sqlalchemy import (
    BindParameter,
    ColumnElement,
    Connection,
    Select,
    bindparam,
    case,
    distinct,
    func,
    insert,
    select,
)
from sqlalchemy.orm import InstrumentedAttribute, Session

from recgrpc.db import models as m
from recgrpc.db.dialect import SqlDialect, core_connection, sql_of
from recgrpc.records import ActivityAggregates, FeedbackAggregates, UserAggregates

Columns = TypeVarTuple("Columns")


# Window bounds are bound parameters, so each statement is built once per dialect and user
# filter and then reused from SQLAlchemy's compiled cache (building it per call cost more
# than running it).
_WINDOWS = {"since_7d": 7, "since_28d": 28, "since_30d": 30, "since_90d": 90}


def _time(name: str) -> BindParameter[datetime]:
    return bindparam(name, type_=m.UTCDateTime())


def _count_since(column: InstrumentedAttribute[datetime], since: str) -> ColumnElement[Any]:
    return func.sum(case((column > _time(since), 1), else_=0))


def _for_users(
    stmt: Select[*Columns], column: InstrumentedAttribute[str], users: str
) -> Select[*Columns]:
    if users == "one":
        return stmt.where(column == bindparam("user_id"))
    if users == "many":
        return stmt.where(column.in_(bindparam("user_ids", expanding=True)))
    return stmt


def _activity_statement(sql: SqlDialect, users: str) -> Select[Any]:
    it = m.Interaction
    day = sql.utc_day(it.occurred_at)
    return _for_users(
        select(
            it.user_id.label("user_id"),
            func.min(it.occurred_at).label("first_event_at"),
            func.max(it.occurred_at).label("last_event_at"),
            _count_since(it.occurred_at, "since_7d").label("events_7d"),
            _count_since(it.occurred_at, "since_28d").label("events_28d"),
            _count_since(it.occurred_at, "since_30d").label("events_30d"),
            _count_since(it.occurred_at, "since_90d").label("events_90d"),
            func.count(
                distinct(case((it.occurred_at > _time("since_30d"), day), else_=None))
            ).label("active_days_30d"),
        ).where(it.occurred_at <= _time("as_of")),
        it.user_id,
        users,
    ).group_by(it.user_id)


@functools.cache
def _aggregates_statement(sql: SqlDialect, users: str) -> Select[Any]:
    activity = _activity_statement(sql, users).subquery("activity")

    fb = m.Feedback
    in_30d = fb.created_at > _time("since_30d")
    feedback = (
        _for_users(
            select(
                fb.user_id.label("user_id"),
                _count_since(fb.created_at, "since_30d").label("feedback_30d"),
                func.sum(case((in_30d & fb.clicked.is_(True), 1), else_=0)).label("clicks_30d"),
                func.sum(case((in_30d & fb.dismissed.is_(True), 1), else_=0)).label(
                    "dismissals_30d"
                ),
                func.count(fb.rating).label("ratings_90d"),
                func.sum(fb.rating).label("rating_sum_90d"),
            ).where(fb.created_at > _time("since_90d"), fb.created_at <= _time("as_of")),
            fb.user_id,
            users,
        )
        .group_by(fb.user_id)
        .subquery("feedback")
    )
    imp = m.Impression
    impressions = (
        _for_users(
            select(imp.user_id.label("user_id"), func.count().label("impressions_30d")).where(
                imp.served_at > _time("since_30d"), imp.served_at <= _time("as_of")
            ),
            imp.user_id,
            users,
        )
        .group_by(imp.user_id)
        .subquery("impressions")
    )
    pref = m.Preference
    preferences = (
        _for_users(
            select(pref.user_id.label("user_id"), func.count().label("preferences")),
            pref.user_id,
            users,
        )
        .group_by(pref.user_id)
        .subquery("preferences")
    )
    return select(
        activity,
        feedback.c.feedback_30d,
        feedback.c.clicks_30d,
        feedback.c.dismissals_30d,
        feedback.c.ratings_90d,
        feedback.c.rating_sum_90d,
        impressions.c.impressions_30d,
        preferences.c.preferences,
    ).select_from(
        activity.outerjoin(feedback, feedback.c.user_id == activity.c.user_id)
        .outerjoin(impressions, impressions.c.user_id == activity.c.user_id)
        .outerjoin(preferences, preferences.c.user_id == activity.c.user_id)
    )


def aggregates_query(
    session: Session, as_of: datetime, user_ids: Sequence[str] | None = None
) -> tuple[Select[Any], dict[str, Any]]:
    """The statement computing every aggregate as of ``as_of``, and its parameters.

    Interaction, feedback, impression and preference aggregates come from one statement,
    so serving makes one round trip; each grouped subquery carries the user filter, so
    PostgreSQL reads only that user's index ranges. ``user_ids=None`` means every user.
    """
    params: dict[str, Any] = {"as_of": as_of}
    params.update({name: as_of - timedelta(days=days) for name, days in _WINDOWS.items()})
    if user_ids is None:
        users = "all"
    elif len(user_ids) == 1:
        users = "one"
        params["user_id"] = user_ids[0]
    else:
        users = "many"
        params["user_ids"] = list(user_ids)
    return _aggregates_statement(sql_of(session), users), params


def user_aggregates(
    session: Session, as_of: datetime, user_ids: Sequence[str] | None = None
) -> dict[str, UserAggregates]:
    """Aggregates as of ``as_of`` for ``user_ids`` (None: every user), keyed by user id.

    Only users with at least one interaction at or before ``as_of`` appear. One statement
    whatever the number of users: a short list of ids when serving, None for training.
    """
    if user_ids is not None and not user_ids:
        return {}
    statement, params = aggregates_query(session, as_of, user_ids)
    rows = session.execute(statement, params).mappings().all()
    return {
        row["user_id"]: UserAggregates(
            activity=ActivityAggregates(
                first_event_at=row["first_event_at"],
                last_event_at=row["last_event_at"],
                events_7d=int(row["events_7d"] or 0),
                events_28d=int(row["events_28d"] or 0),
                events_30d=int(row["events_30d"] or 0),
                events_90d=int(row["events_90d"] or 0),
                active_days_30d=int(row["active_days_30d"] or 0),
            ),
            feedback=FeedbackAggregates(
                feedback_30d=int(row["feedback_30d"] or 0),
                clicks_30d=int(row["clicks_30d"] or 0),
                dismissals_30d=int(row["dismissals_30d"] or 0),
                ratings_90d=int(row["ratings_90d"] or 0),
                rating_sum_90d=float(row["rating_sum_90d"] or 0.0),
            ),
            impressions_30d=int(row["impressions_30d"] or 0),
            preferences=int(row["preferences"] or 0),
        )
        for row in rows
    }


def active_user_ids(session: Session, start: datetime, end: datetime) -> set[str]:
    """Users with at least one interaction in ``(start, end]`` (the churn label window)."""
    it = m.Interaction
    return set(
        session.scalars(
            select(it.user_id).where(it.occurred_at > start, it.occurred_at <= end).distinct()
        )
    )


def history_span(session: Session) -> tuple[datetime, datetime] | None:
    """(first, last) interaction time in the database, or None when there is none."""
    first, last = session.execute(
        select(func.min(m.Interaction.occurred_at), func.max(m.Interaction.occurred_at))
    ).one()
    if first is None or last is None:
        return None
    return first, last


# -- predictions --------------------------------------------------------------------------


def record_predictions(executor: Session | Connection, rows: Collection[Mapping[str, Any]]) -> None:
    """Append churn predictions (``churn_predictions`` columns as keys) in bulk.

    On PostgreSQL the transaction commits without waiting for its WAL flush: a prediction is
    a record that can be recomputed, and a disk sync per PredictChurn would dominate it.
    """
    batch = list(rows)
    if not batch:
        return
    # Core insert on the connection: the ORM bulk path costs more than the row itself here.
    connection = core_connection(executor)
    sql_of(connection).relax_durability(connection)
    statement = insert(m.ChurnPrediction)
    for start in range(0, len(batch), 2000):
        connection.execute(statement, [dict(r) for r in batch[start : start + 2000]])
