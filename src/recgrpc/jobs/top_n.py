"""Writing every active user's top-N list after a model is promoted (``recommendations``)."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import numpy as np
import numpy.typing as npt
from scipy import sparse

from recgrpc.db import Database
from recgrpc.db import training_data as td
from recgrpc.domain import Algorithm
from recgrpc.model.features import InteractionData
from recgrpc.model.representations import ModelView
from recgrpc.model.scoring import UserRow, scores, with_bias_term, with_ease

TOP_N_CHUNK_USERS = 500


def write_top_n(
    db: Database,
    view: ModelView,
    data: InteractionData,
    user_rows: Sequence[UserRow],
    *,
    top_n: int,
    now: datetime,
    history: sparse.csr_matrix | None = None,
) -> int:
    """Score every active user (interactions or preferences) in blocks, keep the top-N unseen
    items, and replace their stored lists. Returns the number of lists written. ``history``
    (users x items) scores the view's EASE part, when it has one.

    Scoring the next block (numpy, which releases the GIL) overlaps with writing the current
    one, so the whole takes about the longer of the two rather than their sum.
    """
    items = view.items_for(Algorithm.HYBRID)
    n_items = items.shape[0]
    n = min(top_n, n_items)
    users, known = view.user_matrix(Algorithm.HYBRID, user_rows)
    active = np.flatnonzero(known)
    seen = sparse.csr_matrix(
        (
            np.ones(data.pair_user.size + data.negative_user.size, dtype=np.float32),
            (
                np.concatenate([data.pair_user, data.negative_user]),
                np.concatenate([data.pair_item, data.negative_item]),
            ),
        ),
        shape=(data.n_users, n_items),
    )

    def top_of(
        rows: npt.NDArray[np.int64],
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        s = with_ease(view, scores(items, with_bias_term(users[rows])), history, rows)
        blocked = seen[rows].tocoo()
        s[blocked.row, blocked.col] = -np.inf
        part = np.argpartition(s, n_items - n, axis=1)[:, n_items - n :]  # no negated copy
        part_scores = np.take_along_axis(s, part, axis=1)
        order = np.argsort(-part_scores, axis=1, kind="stable")
        return np.take_along_axis(part, order, axis=1), np.take_along_axis(
            part_scores, order, axis=1
        )

    # One transaction per chunk: each user's list is replaced atomically, the per-user locks
    # stay few, and servers recording impressions meanwhile never wait long for the database.
    chunks = [active[i : i + TOP_N_CHUNK_USERS] for i in range(0, active.size, TOP_N_CHUNK_USERS)]
    with db.writer() as session:
        td.refresh_recommendation_statistics(session)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="top-n") as pool:
        pending = pool.submit(top_of, chunks[0]) if chunks else None
        for k, chunk in enumerate(chunks):
            assert pending is not None
            top_items, top_scores = pending.result()
            pending = pool.submit(top_of, chunks[k + 1]) if k + 1 < len(chunks) else None
            with db.writer() as session:
                td.replace_top_n(
                    session,
                    user_ids=[data.user_ids[r] for r in chunk],
                    item_ids=data.item_ids,
                    top_items=top_items,
                    top_scores=top_scores,
                    algorithm=Algorithm.HYBRID.value,
                    model_version=view.version,
                    generated_at=now,
                )
    return int(active.size)
