"""The item-neighbour artifact: behaviour and session tables plus the content index, as npz.

Stored beside the recommender it was built with (same version, see db.neighbour_store); read
back with ``allow_pickle=False`` and validated like the recommender's artifact.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from recgrpc.config import Settings
from recgrpc.model.features import InteractionData
from recgrpc.model.neighbours import (
    DEFAULT_ALPHA,
    ContentIndex,
    NeighbourTable,
    baskets_matrix,
    cooccurrence_neighbours,
    sessions,
)
from recgrpc.model.weights import EventWeights
from recgrpc.records import TrainingRows

FORMAT_VERSION = 1


@dataclass(frozen=True)
class NeighbourParams:
    """How the tables are built (stored with them)."""

    k: int = 100
    measure: str = "asymmetric"
    alpha: float = DEFAULT_ALPHA
    session_window_seconds: float = 3600.0
    min_support: int = 2
    """Sessions a pair must share to become a frequently-together rule."""
    min_lift: float = 1.0

    @classmethod
    def from_settings(cls, settings: Settings) -> NeighbourParams:
        return cls(
            k=settings.neighbours_k,
            measure=settings.neighbour_measure,
            session_window_seconds=settings.together_window_minutes * 60.0,
            min_support=settings.together_min_support,
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "k": self.k,
            "measure": self.measure,
            "alpha": self.alpha,
            "session_window_seconds": self.session_window_seconds,
            "min_support": self.min_support,
            "min_lift": self.min_lift,
        }


@dataclass(frozen=True)
class NeighbourArrays:
    version: str
    params: dict[str, Any]
    item_ids: tuple[str, ...]
    behaviour: NeighbourTable
    together: NeighbourTable
    content: ContentIndex = field(repr=False)


def build_neighbours(
    version: str,
    *,
    item_ids: Sequence[str],
    positives: tuple[npt.ArrayLike, npt.ArrayLike],
    events: tuple[npt.ArrayLike, npt.ArrayLike, npt.ArrayLike],
    texts: Sequence[tuple[str, Sequence[str], Sequence[str]]],
    params: NeighbourParams,
) -> NeighbourArrays:
    """All three structures for ``item_ids`` (positions as in the recommender's item order).

    ``positives`` are (user, item) positive pairs; ``events`` are (user, item, unix seconds) of
    positive events, split into sessions; ``texts`` is (title, categories, tags) per item.
    """
    n_items = len(item_ids)
    users, items = (np.asarray(a, dtype=np.int64) for a in positives)
    n_users = int(users.max()) + 1 if users.size else 0
    behaviour = cooccurrence_neighbours(
        baskets_matrix(users, items, n_users, n_items), params.k, params.measure, alpha=params.alpha
    )
    ev_user, ev_item, ev_time = (np.asarray(a) for a in events)
    session, n_sessions = sessions(ev_user, ev_time, params.session_window_seconds)
    together = cooccurrence_neighbours(
        baskets_matrix(session, ev_item, n_sessions, n_items),
        params.k,
        "lift",
        min_support=params.min_support,
        min_lift=params.min_lift,
    )
    return NeighbourArrays(
        version=version,
        params=params.as_dict(),
        item_ids=tuple(item_ids),
        behaviour=behaviour,
        together=together,
        content=ContentIndex.build(texts),
    )


def training_inputs(
    data: InteractionData,
    rows: TrainingRows,
    titles: Mapping[str, str],
    interaction_weights: EventWeights,
) -> tuple[
    tuple[npt.NDArray[np.int32], npt.NDArray[np.int32]],
    tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.float64]],
    list[tuple[str, Sequence[str], Sequence[str]]],
]:
    """``build_neighbours``' positives, events and texts from what training read.

    Positives are the model's positive pairs; events are the positive interactions (by the
    type weights) on catalogued items, with their times, for sessions.
    """
    item_pos = {iid: i for i, iid in enumerate(data.item_ids)}
    user_pos = {uid: i for i, uid in enumerate(data.user_ids)}
    kept = [r for r in rows.interactions if r[1] in item_pos]
    weights = interaction_weights.weights(
        [r[2] for r in kept], np.array([r[3] for r in kept], dtype=np.float64)
    )
    positive = [r for r, w in zip(kept, weights.tolist(), strict=True) if w > 0]
    events = (
        np.array([user_pos[r[0]] for r in positive], dtype=np.int64),
        np.array([item_pos[r[1]] for r in positive], dtype=np.int64),
        np.array([r[4].timestamp() for r in positive], dtype=np.float64),
    )
    texts: list[tuple[str, Sequence[str], Sequence[str]]] = [
        (titles.get(iid, ""), cats, tags) for iid, cats, tags, _ in rows.items
    ]
    return (data.pair_user, data.pair_item), events, texts


def summary(arrays: NeighbourArrays) -> dict[str, Any]:
    """Figures stored with the artifact (the dashboard's models page shows metrics)."""
    behaviour, together = arrays.behaviour.counts(), arrays.together.counts()
    return {
        "items": len(arrays.item_ids),
        "items_with_behaviour_neighbours": int(np.count_nonzero(behaviour)),
        "items_with_together_rules": int(np.count_nonzero(together)),
        "together_rules": int(together.sum()),
        "content_terms": len(arrays.content.terms),
    }


def encode(arrays: NeighbourArrays) -> bytes:
    buffer = io.BytesIO()
    payload: dict[str, Any] = {
        "format_version": np.array(FORMAT_VERSION, dtype=np.int32),
        "version": np.array(arrays.version),
        "params_json": np.array(json.dumps(arrays.params, sort_keys=True)),
        "item_ids": np.array(arrays.item_ids, dtype=np.str_),
        "content_terms": np.array(arrays.content.terms, dtype=np.str_),
        "content_idf": arrays.content.idf.astype(np.float32),
        "content_indptr": arrays.content.matrix.indptr.astype(np.int64),
        "content_indices": arrays.content.matrix.indices.astype(np.int32),
    }
    for name in ("behaviour", "together"):
        table: NeighbourTable = getattr(arrays, name)
        payload[f"{name}_indptr"] = table.indptr.astype(np.int64)
        payload[f"{name}_indices"] = table.indices.astype(np.int32)
        payload[f"{name}_scores"] = table.scores.astype(np.float32)
    np.savez_compressed(buffer, **payload)
    return buffer.getvalue()


_REQUIRED = (
    "format_version", "version", "params_json", "item_ids", "content_terms", "content_idf",
    "content_indptr", "content_indices", "behaviour_indptr", "behaviour_indices",
    "behaviour_scores", "together_indptr", "together_indices", "together_scores",
)  # fmt: skip


def decode(data: bytes) -> NeighbourArrays:
    """Parse and validate; ``ValueError`` naming the problem."""
    try:
        with np.load(io.BytesIO(bytes(data)), allow_pickle=False) as archive:
            raw = {name: archive[name] for name in archive.files}
    except (zipfile.BadZipFile, OSError, EOFError, KeyError, ValueError) as exc:
        raise ValueError(f"neighbour artifact is not a readable npz archive: {exc}") from None
    missing = sorted(set(_REQUIRED) - raw.keys())
    if missing:
        raise ValueError(f"neighbour artifact lacks arrays: {', '.join(missing)}")
    if int(raw["format_version"]) != FORMAT_VERSION:
        raise ValueError(f"unsupported neighbour artifact format {int(raw['format_version'])}")
    for name in ("item_ids", "content_terms"):
        if raw[name].dtype.kind != "U" or raw[name].ndim != 1:
            raise ValueError(f"{name} must be a one-dimensional string array")
    try:
        params = json.loads(str(raw["params_json"]))
    except json.JSONDecodeError as exc:
        raise ValueError(f"neighbour artifact params are not JSON: {exc}") from None
    if not isinstance(params, dict):
        raise ValueError("neighbour artifact params must be a JSON object")
    item_ids = tuple(raw["item_ids"].tolist())
    n_items = len(item_ids)
    tables = {}
    for name in ("behaviour", "together"):
        table = NeighbourTable(
            indptr=raw[f"{name}_indptr"].astype(np.int64),
            indices=raw[f"{name}_indices"].astype(np.int32),
            scores=raw[f"{name}_scores"].astype(np.float32),
        )
        table.validate(n_items)
        tables[name] = table
    content = ContentIndex.from_parts(
        tuple(raw["content_terms"].tolist()),
        raw["content_idf"].astype(np.float32),
        raw["content_indptr"].astype(np.int64),
        raw["content_indices"].astype(np.int32),
    )
    if content.matrix.shape[0] != n_items:
        raise ValueError("content index rows do not match item_ids")
    return NeighbourArrays(
        version=str(raw["version"]),
        params=params,
        item_ids=item_ids,
        behaviour=tables["behaviour"],
        together=tables["together"],
        content=content,
    )
