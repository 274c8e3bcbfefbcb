"""Features and interaction weights: turns database rows into LightFM's sparse inputs.

User features: identity + preference categories (weighted by score) + attributes ``key=value``.
Item features: identity + categories + tags. Rows are normalised to sum to one, the same way in
training and in serving (``user_feature_weights`` / ``item_feature_weights``), so a user or item
built at request time lands in the same space as the ones the model was trained on.

Interaction weights: ``model.weights.EventWeights`` (by type; a RATING by its place on the
rating scale, so a low rating counts against the item); a time decay with
``Settings.decay_half_life_days`` counted back from each user's newest event (history
imported from years ago trains like yesterday's, and a user who stopped long before the others
still counts). Dismissals and pairs whose total is not
positive are never positives.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import sparse

from recgrpc.config import Settings
from recgrpc.model.weights import EventWeights
from recgrpc.records import TrainingRows

USER_PREFIX = "user:"
ITEM_PREFIX = "item:"
PREFERENCE_PREFIX = "preference:"
ATTRIBUTE_PREFIX = "attribute:"
CATEGORY_PREFIX = "category:"
TAG_PREFIX = "tag:"

ATTRIBUTE_SHARE = 0.5
"""Attributes together weigh half as much as preferences: they describe, preferences choose."""
TAG_SHARE = 0.5
"""Tags together weigh half as much as categories."""
MIN_FEATURE_USERS = 2
"""An attribute value or tag must be shared by this many rows to become a feature."""

Weights = dict[str, float]


def _normalised(weights: Weights) -> Weights:
    total = sum(weights.values())
    if total <= 0:
        return {}
    return {name: w / total for name, w in weights.items()}


def user_feature_weights(
    user_id: str | None,
    preferences: Mapping[str, float],
    attributes: Mapping[str, str],
    *,
    identity: bool = True,
    content: bool = True,
) -> Weights:
    """Feature name -> weight (summing to one) for one user.

    ``identity=False`` gives the content-only view (preferences and attributes); ``content=False``
    the behaviour-only view. Non-positive preference scores are ignored.
    """
    weights: Weights = {}
    if identity and user_id is not None:
        weights[USER_PREFIX + user_id] = 1.0
    if content:
        positive = {c: s for c, s in preferences.items() if s > 0 and math.isfinite(s)}
        total = sum(positive.values())
        for cat, score in positive.items():
            weights[PREFERENCE_PREFIX + cat] = score / total
        if attributes:
            share = ATTRIBUTE_SHARE / len(attributes)
            for key, value in attributes.items():
                weights[f"{ATTRIBUTE_PREFIX}{key}={value}"] = share
    return _normalised(weights)


def item_feature_weights(
    item_id: str | None,
    categories: Sequence[str],
    tags: Sequence[str],
    *,
    identity: bool = True,
    content: bool = True,
) -> Weights:
    """Feature name -> weight (summing to one) for one item (see ``user_feature_weights``)."""
    weights: Weights = {}
    if identity and item_id is not None:
        weights[ITEM_PREFIX + item_id] = 1.0
    if content:
        cats = list(dict.fromkeys(categories))
        for cat in cats:
            weights[CATEGORY_PREFIX + cat] = 1.0 / len(cats)
        uniq_tags = list(dict.fromkeys(tags))
        for tag in uniq_tags:
            weights[TAG_PREFIX + tag] = TAG_SHARE / len(uniq_tags)
    return _normalised(weights)


def feature_matrix(rows: Sequence[Weights], index: Mapping[str, int]) -> sparse.csr_matrix:
    """CSR (len(rows) x len(index)) of the weights; names missing from ``index`` are skipped
    and the remaining weights renormalised."""
    indptr = np.zeros(len(rows) + 1, dtype=np.int32)
    indices: list[int] = []
    data: list[float] = []
    for r, weights in enumerate(rows):
        known = [(index[n], w) for n, w in weights.items() if n in index]
        total = sum(w for _, w in known)
        for col, w in known:
            indices.append(col)
            data.append(w / total)
        indptr[r + 1] = len(indices)
    return sparse.csr_matrix(
        (np.array(data, dtype=np.float32), np.array(indices, dtype=np.int32), indptr),
        shape=(len(rows), len(index)),
    )


@dataclass(frozen=True)
class InteractionData:
    """Users, items, their feature matrices and the aggregated (user, item) pairs.

    ``pair_*`` arrays hold one entry per positive pair: summed decayed weight and the time of
    its most recent positive event. ``negative_*`` hold pairs that must never be positives
    (dismissed, disliked, rated low): evaluation treats them as seen.
    """

    user_ids: tuple[str, ...]
    item_ids: tuple[str, ...]
    user_feature_names: tuple[str, ...]
    item_feature_names: tuple[str, ...]
    user_features: sparse.csr_matrix
    item_features: sparse.csr_matrix
    pair_user: npt.NDArray[np.int32]
    pair_item: npt.NDArray[np.int32]
    pair_weight: npt.NDArray[np.float32]
    pair_time: npt.NDArray[np.float64]
    pair_strength: npt.NDArray[np.float32]
    """Undecayed summed weight of each positive pair, in LIKEs (a 4-star rating: 0.6)."""
    negative_user: npt.NDArray[np.int32]
    negative_item: npt.NDArray[np.int32]
    newest_event: float
    """Unix seconds of the newest event in the data."""

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)


def _shared_values(values: Iterable[str]) -> set[str]:
    counts = Counter(values)
    return {v for v, n in counts.items() if n >= MIN_FEATURE_USERS}


def build_interaction_data(rows: TrainingRows, settings: Settings) -> InteractionData:
    """Aggregate events and feedback into weighted positive pairs plus feature matrices."""
    item_ids = tuple(r[0] for r in rows.items)
    item_pos = {iid: i for i, iid in enumerate(item_ids)}
    user_set = {u for u, _ in rows.users}
    user_set.update(r[0] for r in rows.interactions)
    user_set.update(r[0] for r in rows.preferences)
    user_ids = tuple(sorted(user_set))
    user_pos = {uid: i for i, uid in enumerate(user_ids)}

    # Events: interactions, plus feedback clicks (as CLICK) and feedback ratings (as RATING).
    ev_user: list[int] = []
    ev_item: list[int] = []
    ev_type: list[str] = []
    ev_value: list[float] = []
    ev_time: list[float] = []
    dismissed: list[tuple[int, int]] = []
    for uid, iid, kind, value, at in rows.interactions:
        i = item_pos.get(iid)
        if i is None:
            continue
        ev_user.append(user_pos[uid])
        ev_item.append(i)
        ev_type.append(kind)
        ev_value.append(value)
        ev_time.append(at.timestamp())
    for uid, iid, clicked, was_dismissed, rating, at in rows.feedback:
        i = item_pos.get(iid)
        u = user_pos.get(uid)
        if i is None or u is None:
            continue
        if was_dismissed:
            dismissed.append((u, i))
        for kind, value, wanted in (
            ("CLICK", 0.0, clicked),
            ("RATING", rating or 0.0, rating is not None),
        ):
            if wanted:
                ev_user.append(u)
                ev_item.append(i)
                ev_type.append(kind)
                ev_value.append(value)
                ev_time.append(at.timestamp())

    n_items = len(item_ids)
    users = np.array(ev_user, dtype=np.int64)
    items = np.array(ev_item, dtype=np.int64)
    times = np.array(ev_time, dtype=np.float64)
    weights = EventWeights.of(settings).weights(ev_type, np.array(ev_value, dtype=np.float64))
    undecayed = weights / float(settings.interaction_weights.get("LIKE", 4.0) or 1.0)
    newest = float(times.max()) if times.size else 0.0
    if times.size:
        # Counted back from each user's own newest event: anchored globally, a user whose history
        # ended years before the newest event in the data would weigh nothing at all.
        user_newest = np.full(len(user_ids), -np.inf)
        np.maximum.at(user_newest, users, times)
        half_life = settings.decay_half_life_days * 86400.0
        weights = weights * np.exp2(-(user_newest[users] - times) / half_life)

    keys = users * max(n_items, 1) + items
    uniq, inverse = np.unique(keys, return_inverse=True)
    total = np.bincount(inverse, weights=weights, minlength=uniq.size)
    strength = np.bincount(inverse, weights=undecayed, minlength=uniq.size)
    last = np.full(uniq.size, -np.inf)
    positive_event = weights > 0
    np.maximum.at(last, inverse[positive_event], times[positive_event])
    if dismissed:
        dkeys = np.array([u * n_items + i for u, i in dismissed], dtype=np.int64)
        vetoed = np.isin(uniq, dkeys)
    else:
        vetoed = np.zeros(uniq.size, dtype=np.bool_)
    keep = (total > 0) & ~vetoed
    negative = ~keep
    if dismissed:
        # Dismissals of items never interacted with are negatives too.
        dkeys_all = np.unique(np.array([u * n_items + i for u, i in dismissed], dtype=np.int64))
        negative_keys = np.union1d(uniq[negative], dkeys_all)
    else:
        negative_keys = uniq[negative]

    user_features, user_names = _user_features(rows, user_ids)
    item_features, item_names = _item_features(rows)
    divisor = max(n_items, 1)
    return InteractionData(
        user_ids=user_ids,
        item_ids=item_ids,
        user_feature_names=user_names,
        item_feature_names=item_names,
        user_features=user_features,
        item_features=item_features,
        pair_user=(uniq[keep] // divisor).astype(np.int32),
        pair_item=(uniq[keep] % divisor).astype(np.int32),
        pair_weight=total[keep].astype(np.float32),
        pair_time=last[keep],
        pair_strength=strength[keep].astype(np.float32),
        negative_user=(negative_keys // divisor).astype(np.int32),
        negative_item=(negative_keys % divisor).astype(np.int32),
        newest_event=newest,
    )


def _user_features(
    rows: TrainingRows, user_ids: Sequence[str]
) -> tuple[sparse.csr_matrix, tuple[str, ...]]:
    prefs: dict[str, dict[str, float]] = {}
    for uid, cat, score in rows.preferences:
        prefs.setdefault(uid, {})[cat] = score
    attrs = {uid: a for uid, a in rows.users}
    shared = _shared_values(f"{k}={v}" for a in attrs.values() for k, v in a.items())
    weights = []
    for uid in user_ids:
        user_attrs = {k: v for k, v in attrs.get(uid, {}).items() if f"{k}={v}" in shared}
        weights.append(user_feature_weights(uid, prefs.get(uid, {}), user_attrs))
    names = [USER_PREFIX + uid for uid in user_ids]
    names += sorted({n for w in weights for n in w if not n.startswith(USER_PREFIX)})
    index = {n: i for i, n in enumerate(names)}
    return feature_matrix(weights, index), tuple(names)


def _item_features(rows: TrainingRows) -> tuple[sparse.csr_matrix, tuple[str, ...]]:
    shared_tags = _shared_values(t for _, _, tags, _ in rows.items for t in set(tags))
    weights = [
        item_feature_weights(iid, cats, [t for t in tags if t in shared_tags])
        for iid, cats, tags, _ in rows.items
    ]
    names = [ITEM_PREFIX + r[0] for r in rows.items]
    names += sorted({n for w in weights for n in w if not n.startswith(ITEM_PREFIX)})
    index = {n: i for i, n in enumerate(names)}
    return feature_matrix(weights, index), tuple(names)
