"""The recommender artifact: an ``.npz`` archive with explicit id and feature mappings.

No pickle anywhere: every array is numeric or fixed-width unicode, read back with
``np.load(..., allow_pickle=False)``, and validated (keys, dtypes, shapes, finiteness,
unique ids, sparse structure) so a truncated or tampered artifact is refused with a
``ValueError`` that says what is wrong instead of serving garbage.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt

FORMAT_VERSION = 1
REVISION = "revision"
"""The ``params`` key counting rewrites of a stored artifact (erasures); servers reload on it."""

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
I32 = npt.NDArray[np.int32]
Strings = npt.NDArray[np.str_]


@dataclass(frozen=True)
class RecommenderArrays:
    """Everything a trained recommender is, as arrays.

    The first ``len(user_ids)`` user feature names are the identity features ``user:<id>`` in
    ``user_ids`` order (likewise for items); the rest are preference/attribute (category/tag)
    features. ``item_features_*`` is the CSR feature matrix of the trained items.
    """

    version: str
    params: dict[str, Any]
    user_ids: Strings
    item_ids: Strings
    user_feature_names: Strings
    item_feature_names: Strings
    user_feature_embeddings: F32
    user_feature_biases: F32
    item_feature_embeddings: F32
    item_feature_biases: F32
    item_features_indptr: I32
    item_features_indices: I32
    item_features_data: F32
    user_trained_until: F64
    """Unix seconds of each user's newest event in the training set (-inf if none)."""
    user_train_weight: F32
    """Each user's summed training weight: how much evidence their vector rests on."""
    typical_user_norm: float
    newest_event: float
    ease_items: Strings | None = None
    """Item ids the EASE part of the blend covers (absent: LightFM only)."""
    ease_weights: F32 | None = None
    """``len(ease_items)`` square item-to-item weights of the EASE part."""
    holdout_fit: dict[str, npt.NDArray[Any]] | None = None
    """The LightFM arrays (``HOLDOUT_FIT`` names) of the same configuration fitted without each
    user's newest positives, when the served ones were refitted on everything: the promotion
    gate scores that twin on the holdout, which the served model has learned from."""


_FLOAT32 = (
    "user_feature_embeddings",
    "user_feature_biases",
    "item_feature_embeddings",
    "item_feature_biases",
    "item_features_data",
    "user_train_weight",
)
_INT32 = ("item_features_indptr", "item_features_indices")
HOLDOUT_FIT = (
    "user_feature_embeddings",
    "user_feature_biases",
    "item_feature_embeddings",
    "item_feature_biases",
    "user_train_weight",
    "user_trained_until",
    "typical_user_norm",
)
_HOLDOUT = "holdout_"
_STRINGS = ("user_ids", "item_ids", "user_feature_names", "item_feature_names")


def encode(arrays: RecommenderArrays) -> bytes:
    """The artifact as npz bytes (compressed)."""
    buffer = io.BytesIO()
    payload: dict[str, Any] = {
        "format_version": np.array(FORMAT_VERSION, dtype=np.int32),
        "version": np.array(arrays.version),
        "params_json": np.array(json.dumps(arrays.params, sort_keys=True)),
        "user_trained_until": arrays.user_trained_until.astype(np.float64),
        "typical_user_norm": np.array(arrays.typical_user_norm, dtype=np.float64),
        "newest_event": np.array(arrays.newest_event, dtype=np.float64),
    }
    for name in _FLOAT32:
        payload[name] = np.ascontiguousarray(getattr(arrays, name), dtype=np.float32)
    for name in _INT32:
        payload[name] = np.ascontiguousarray(getattr(arrays, name), dtype=np.int32)
    for name in _STRINGS:
        payload[name] = np.asarray(getattr(arrays, name), dtype=np.str_)
    if arrays.ease_items is not None and arrays.ease_weights is not None:
        payload["ease_items"] = np.asarray(arrays.ease_items, dtype=np.str_)
        payload["ease_weights"] = np.ascontiguousarray(arrays.ease_weights, dtype=np.float32)
    for name, value in (arrays.holdout_fit or {}).items():
        payload[_HOLDOUT + name] = np.asarray(value)  # a 0-d scalar stays 0-d
    np.savez_compressed(buffer, **payload)
    return buffer.getvalue()


def decode(data: bytes) -> RecommenderArrays:
    """Parse and validate artifact bytes; ``ValueError`` naming the problem if invalid."""
    if not isinstance(data, bytes | bytearray | memoryview) or len(data) == 0:
        raise ValueError("recommender artifact is empty")
    try:
        with np.load(io.BytesIO(bytes(data)), allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except (zipfile.BadZipFile, OSError, EOFError, KeyError, ValueError) as exc:
        raise ValueError(f"recommender artifact is not a readable npz archive: {exc}") from None
    required = {
        "format_version", "version", "params_json", "user_trained_until",
        "typical_user_norm", "newest_event", *_FLOAT32, *_INT32, *_STRINGS,
    }  # fmt: skip
    missing = sorted(required - arrays.keys())
    if missing:
        raise ValueError(f"recommender artifact lacks arrays: {', '.join(missing)}")
    if int(arrays["format_version"]) != FORMAT_VERSION:
        raise ValueError(f"unsupported artifact format {int(arrays['format_version'])}")
    for name in _FLOAT32:
        _require_kind(name, arrays[name], "f")
    for name in _INT32:
        _require_kind(name, arrays[name], "iu")
    for name in _STRINGS:
        _require_kind(name, arrays[name], "U")
        if arrays[name].ndim != 1:
            raise ValueError(f"{name} must be one-dimensional")
    try:
        params = json.loads(str(arrays["params_json"]))
    except json.JSONDecodeError as exc:
        raise ValueError(f"artifact params are not JSON: {exc}") from None
    if not isinstance(params, dict):
        raise ValueError("artifact params must be a JSON object")
    result = RecommenderArrays(
        version=str(arrays["version"]),
        params=params,
        user_ids=arrays["user_ids"],
        item_ids=arrays["item_ids"],
        user_feature_names=arrays["user_feature_names"],
        item_feature_names=arrays["item_feature_names"],
        **_fitted(arrays),
        item_features_indptr=arrays["item_features_indptr"].astype(np.int32, copy=False),
        item_features_indices=arrays["item_features_indices"].astype(np.int32, copy=False),
        item_features_data=arrays["item_features_data"].astype(np.float32, copy=False),
        newest_event=float(arrays["newest_event"]),
        **_ease_arrays(arrays),
        holdout_fit=_holdout_arrays(arrays),
    )
    validate(result)
    return result


def _ease_arrays(arrays: dict[str, npt.NDArray[Any]]) -> dict[str, Any]:
    """The optional EASE part: both arrays or neither (older artifacts have none)."""
    present = {"ease_items", "ease_weights"} & arrays.keys()
    if not present:
        return {}
    if len(present) == 1:
        raise ValueError(f"recommender artifact has {present.pop()} without its pair")
    _require_kind("ease_items", arrays["ease_items"], "U")
    _require_kind("ease_weights", arrays["ease_weights"], "f")
    return {
        "ease_items": arrays["ease_items"],
        "ease_weights": arrays["ease_weights"].astype(np.float32, copy=False),
    }


def _holdout_arrays(arrays: dict[str, npt.NDArray[Any]]) -> dict[str, npt.NDArray[Any]] | None:
    """The optional holdout twin: every ``HOLDOUT_FIT`` array or none (older artifacts)."""
    present = {n for n in HOLDOUT_FIT if _HOLDOUT + n in arrays}
    if not present:
        return None
    missing = sorted(set(HOLDOUT_FIT) - present)
    if missing:
        raise ValueError(f"recommender artifact's holdout twin lacks {', '.join(missing)}")
    out = {}
    for name in HOLDOUT_FIT:
        _require_kind(_HOLDOUT + name, arrays[_HOLDOUT + name], "f")
        out[name] = arrays[_HOLDOUT + name]
    return out


def holdout_twin_lightfm(a: RecommenderArrays) -> RecommenderArrays:
    """``a`` with its LightFM arrays replaced by the holdout twin's (``a`` without one)."""
    if a.holdout_fit is None:
        return a
    return replace(a, **_fitted(a.holdout_fit), holdout_fit=None)


def _fitted(arrays: Mapping[str, npt.NDArray[Any]]) -> dict[str, Any]:
    """The ``HOLDOUT_FIT`` fields (what a LightFM fit learns) from arrays of those names."""
    out: dict[str, Any] = {
        name: arrays[name].astype(np.float64 if name == "user_trained_until" else np.float32,
                                  copy=False)
        for name in HOLDOUT_FIT if name != "typical_user_norm"
    }  # fmt: skip
    out["typical_user_norm"] = float(arrays["typical_user_norm"])
    return out


def _require_kind(name: str, array: npt.NDArray[Any], kinds: str) -> None:
    if array.dtype.kind not in kinds:
        raise ValueError(f"{name} has dtype {array.dtype}, expected kind {kinds!r}")


def validate(a: RecommenderArrays) -> None:
    """Shapes agree, identity features line up with the ids, values are finite, ids unique."""
    n_users, n_items = a.user_ids.shape[0], a.item_ids.shape[0]
    if n_items == 0:  # no users is possible: every user it was trained on was erased
        raise ValueError("artifact has no items")
    for label, ids in (("user_ids", a.user_ids), ("item_ids", a.item_ids)):
        if np.unique(ids).size != ids.size:
            raise ValueError(f"{label} are not unique")
    for label, names in (
        ("user_feature_names", a.user_feature_names),
        ("item_feature_names", a.item_feature_names),
    ):
        if np.unique(names).size != names.size:
            raise ValueError(f"{label} are not unique")
    for side, emb, bias, names, n in (
        ("user", a.user_feature_embeddings, a.user_feature_biases, a.user_feature_names, n_users),
        ("item", a.item_feature_embeddings, a.item_feature_biases, a.item_feature_names, n_items),
    ):
        if emb.ndim != 2 or emb.shape[0] != names.shape[0]:
            raise ValueError(
                f"{side}_feature_embeddings has shape {emb.shape}, "
                f"expected ({names.shape[0]}, components)"
            )
        if bias.shape != (names.shape[0],):
            raise ValueError(f"{side}_feature_biases has shape {bias.shape}")
        if names.shape[0] < n:
            raise ValueError(f"fewer {side} features than {side}s")
        if not (np.isfinite(emb).all() and np.isfinite(bias).all()):
            raise ValueError(f"{side} embeddings contain NaN or infinite values")
    prefix_ok = np.char.startswith(a.user_feature_names[:n_users], "user:").all() and (
        np.char.startswith(a.item_feature_names[:n_items], "item:").all()
    )
    if not prefix_ok:
        raise ValueError("identity features do not line up with the ids")
    if a.user_feature_embeddings.shape[1] != a.item_feature_embeddings.shape[1]:
        raise ValueError("user and item embeddings have different numbers of components")
    indptr, indices, data = a.item_features_indptr, a.item_features_indices, a.item_features_data
    if indptr.shape != (n_items + 1,) or indptr[0] != 0 or np.any(np.diff(indptr) < 0):
        raise ValueError("item_features_indptr is malformed")
    if indices.shape != data.shape or indptr[-1] != indices.shape[0]:
        raise ValueError("item feature matrix has inconsistent lengths")
    if indices.size and (indices.min() < 0 or indices.max() >= a.item_feature_names.shape[0]):
        raise ValueError("item feature index out of range")
    if not np.isfinite(data).all():
        raise ValueError("item feature weights contain NaN or infinite values")
    if a.user_trained_until.shape != (n_users,) or a.user_train_weight.shape != (n_users,):
        raise ValueError("per-user arrays do not match user_ids")
    if np.isnan(a.user_trained_until).any() or not np.isfinite(a.user_train_weight).all():
        raise ValueError("per-user arrays contain NaN")
    if not (np.isfinite(a.typical_user_norm) and np.isfinite(a.newest_event)):
        raise ValueError("artifact scalars are not finite")
    if a.ease_items is not None and a.ease_weights is not None:
        m = a.ease_items.shape[0]
        if a.ease_items.ndim != 1 or a.ease_weights.shape != (m, m):
            raise ValueError(f"ease_weights has shape {a.ease_weights.shape}, expected ({m}, {m})")
        if np.unique(a.ease_items).size != m or not np.isin(a.ease_items, a.item_ids).all():
            raise ValueError("ease_items are not unique trained item ids")
        if not np.isfinite(a.ease_weights).all():
            raise ValueError("ease_weights contain NaN or infinite values")
    if a.holdout_fit is not None:
        for name in HOLDOUT_FIT:
            value, served = a.holdout_fit[name], np.asarray(getattr(a, name))
            if value.shape != served.shape:
                raise ValueError(f"holdout twin's {name} has shape {value.shape}")
            finite = name == "user_trained_until" or np.isfinite(value).all()  # -inf: none
            if np.isnan(value).any() or not finite:
                raise ValueError(f"holdout twin's {name} contains NaN or infinite values")


def revision(a: RecommenderArrays) -> int:
    """How many times the artifact was rewritten since training (0 for a trained one)."""
    return int(a.params.get(REVISION, 0))


def without_user(a: RecommenderArrays, user_id: str) -> RecommenderArrays | None:
    """The artifact with no trace of ``user_id`` (their id, identity feature and its learned
    row, per-user arrays), one revision on; None when it never held them.

    Features shared with other users (categories, attributes) stay: they are not the user's.
    """
    rows = np.flatnonzero(a.user_ids == user_id)
    if rows.size == 0:
        return None
    # Identity features come first, in user_ids order: the user's is the feature at their row.
    keep_users = np.ones(a.user_ids.shape[0], dtype=np.bool_)
    keep_users[rows] = False
    keep_features = np.ones(a.user_feature_names.shape[0], dtype=np.bool_)
    keep_features[rows] = False
    purged = replace(
        a,
        params={**a.params, REVISION: revision(a) + 1},
        user_ids=a.user_ids[keep_users],
        user_feature_names=a.user_feature_names[keep_features],
        user_feature_embeddings=a.user_feature_embeddings[keep_features],
        user_feature_biases=a.user_feature_biases[keep_features],
        user_trained_until=a.user_trained_until[keep_users],
        user_train_weight=a.user_train_weight[keep_users],
        holdout_fit=_twin_without(a.holdout_fit, keep_users, keep_features),
    )
    validate(purged)
    return purged


def _twin_without(
    fit: dict[str, npt.NDArray[Any]] | None,
    keep_users: npt.NDArray[np.bool_],
    keep_features: npt.NDArray[np.bool_],
) -> dict[str, npt.NDArray[Any]] | None:
    """The holdout twin's arrays without the erased user's rows, like the served ones."""
    if fit is None:
        return None
    out = dict(fit)
    for name in ("user_feature_embeddings", "user_feature_biases"):
        out[name] = fit[name][keep_features]
    for name in ("user_trained_until", "user_train_weight"):
        out[name] = fit[name][keep_users]
    return out
