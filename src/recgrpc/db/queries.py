"""The query functions the server calls, by data area: one import for the layer above.

They are defined in ``db.events`` (interactions, feedback), ``db.serving`` (user context,
served lists), ``db.catalogue`` (items, users, erasure) and ``db.model_store`` (artifacts);
each takes the caller's session or connection and none opens or commits one.
"""

from __future__ import annotations

from recgrpc.db.catalogue import (
    catalogue,
    catalogue_stamp,
    count_rows,
    delete_user,
    upsert_items,
    upsert_users,
)
from recgrpc.db.dialect import core_connection
from recgrpc.db.events import (
    ensure_users,
    event_window_stamp,
    existing_item_ids,
    hourly_event_counts,
    insert_interactions,
    insert_new_interactions,
    newest_event_time,
    record_feedback,
    record_feedback_batch,
    user_has_history,
)
from recgrpc.db.model_store import model_summary
from recgrpc.db.serving import (
    impression_sources,
    load_user_context,
    lock_users,
    notify_changed,
    notify_erased,
    record_impressions,
)

__all__ = [
    "catalogue",
    "catalogue_stamp",
    "core_connection",
    "count_rows",
    "delete_user",
    "ensure_users",
    "event_window_stamp",
    "existing_item_ids",
    "hourly_event_counts",
    "impression_sources",
    "insert_interactions",
    "insert_new_interactions",
    "load_user_context",
    "lock_users",
    "model_summary",
    "newest_event_time",
    "notify_changed",
    "notify_erased",
    "record_feedback",
    "record_feedback_batch",
    "record_impressions",
    "upsert_items",
    "upsert_users",
    "user_has_history",
]
