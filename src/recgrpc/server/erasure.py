"""Erasing a user beyond the tables: the stored recommender artifacts and the serving model.

DeleteUser must leave the id a stranger everywhere at once (the right to be forgotten does not
wait for the next training): every stored recommender artifact that holds the user is
rewritten without them, a revision on, so every server reloads it; the server that erased them
also masks them in memory straight away. Churn artifacts hold no user ids (trees over features).
"""

from __future__ import annotations

import logging

from sqlalchemy.orm import Session

from recgrpc.db import model_store
from recgrpc.model import artifact

log = logging.getLogger(__name__)


def erase_from_stored_models(session: Session, user_id: str) -> int:
    """Rewrite each stored recommender artifact holding ``user_id`` without them (in the
    caller's transaction); returns how many were rewritten."""
    rewritten = 0
    for version in model_store.model_versions(session, model_store.RECOMMENDER):
        stored = model_store.load_model(session, version)
        if stored is None:
            continue
        try:
            arrays = artifact.decode(stored.artifact)
        except ValueError:
            # Unreadable: it serves nobody, but it may still hold the id; the operator must know.
            log.error("model %s cannot be read to erase a user from it", version)
            continue
        purged = artifact.without_user(arrays, user_id)
        if purged is None:
            continue
        model_store.rewrite_artifact(
            session, version, artifact.encode(purged), artifact.revision(purged)
        )
        rewritten += 1
    return rewritten
