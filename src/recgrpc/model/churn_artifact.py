"""The churn model's artifact: an ``.npz`` of numeric and fixed-width string arrays.

Nothing here is pickled: ``np.savez`` writes plain typed arrays, and :func:`decode` loads with
``allow_pickle=False``, which refuses object arrays, then checks shapes, index ranges and values.
Loading a stored model can therefore only yield numbers and strings, never run code, whoever
wrote the bytes; the trees are walked by our own numpy code, not by an unpickled estimator.

Format 2 adds ``format`` and ``family`` (``trees`` or ``logistic``); an archive without them is a
format-1 tree model, read as before.
"""

from __future__ import annotations

import io
import zipfile

import numpy as np
import numpy.typing as npt

from recgrpc.model.churn_features import FEATURE_NAMES
from recgrpc.model.churn_linear import LOGISTIC, TREES, AnyChurnModel, ChurnLinearModel
from recgrpc.model.churn_trees import ChurnModel, FloatArray

FORMAT = 2


def encode(model: AnyChurnModel) -> bytes:
    """Serialise ``model`` (see the module docstring); :func:`decode` reads it back."""
    buffer = io.BytesIO()
    if isinstance(model, ChurnLinearModel):
        np.savez(
            buffer,
            format=np.array([FORMAT], dtype=np.int64),
            family=np.array(LOGISTIC),
            version=np.array(model.version),
            feature_names=np.array(model.feature_names, dtype=np.str_),
            log_feature=model.log_feature,
            mean=model.mean,
            scale=model.scale,
            coef=model.coef,
            intercept=np.array([model.intercept]),
            horizon_days=np.array([model.horizon_days], dtype=np.int64),
        )
        return buffer.getvalue()
    np.savez(
        buffer,
        format=np.array([FORMAT], dtype=np.int64),
        family=np.array(TREES),
        version=np.array(model.version),
        feature_names=np.array(model.feature_names, dtype=np.str_),
        reference=model.reference,
        baseline=np.array([model.baseline]),
        tree_roots=model.tree_roots,
        node_feature=model.node_feature,
        node_threshold=model.node_threshold,
        node_missing_left=model.node_missing_left,
        node_left=model.node_left,
        node_right=model.node_right,
        node_is_leaf=model.node_is_leaf,
        node_value=model.node_value,
        depth=np.array([model.depth], dtype=np.int64),
        calibration=np.array([model.calib_slope, model.calib_intercept]),
        horizon_days=np.array([model.horizon_days], dtype=np.int64),
    )
    return buffer.getvalue()


def decode(data: bytes) -> AnyChurnModel:
    """Load and validate an artifact written by :func:`encode` (no pickle allowed)."""
    try:
        model = _read(data)
    except (ValueError, KeyError, IndexError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise ValueError(f"churn model artifact is unreadable: {exc}") from exc
    model.validate()
    return model


def _subset(names: tuple[str, ...]) -> bool:
    return (
        names != FEATURE_NAMES
        and len(set(names)) == len(names) <= len(FEATURE_NAMES)
        and (set(names) <= set(FEATURE_NAMES))
    )


# Trees trained before a feature was added never split on it: their nodes are renumbered to
# today's feature order and the new feature's reference left undefined, so a stored model keeps
# serving until the next train-churn instead of being refused.
def _renumber(names: tuple[str, ...], node_feature: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    if not _subset(names) or np.any((node_feature < 0) | (node_feature >= len(names))):
        return node_feature
    return np.array([FEATURE_NAMES.index(n) for n in names], dtype=np.int64)[node_feature]


def _widen(names: tuple[str, ...], reference: FloatArray) -> FloatArray:
    if not _subset(names) or reference.shape != (len(names),):
        return reference
    wide = np.full(len(FEATURE_NAMES), np.nan)
    wide[[FEATURE_NAMES.index(n) for n in names]] = reference
    return wide


def _read(data: bytes) -> AnyChurnModel:
    # np.load raises ValueError on object arrays: they would need pickle.
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        stored_format = int(npz["format"][0]) if "format" in npz.files else 1
        if stored_format > FORMAT:
            raise ValueError(f"format {stored_format} is newer than this server reads ({FORMAT})")
        family = str(npz["family"]) if "family" in npz.files else TREES
        if family not in (TREES, LOGISTIC):
            raise ValueError(f"unknown model family {family!r}")

        def ints(key: str) -> npt.NDArray[np.int64]:
            return np.asarray(npz[key], dtype=np.int64)

        def floats(key: str) -> FloatArray:
            return np.asarray(npz[key], dtype=np.float64)

        def flags(key: str) -> npt.NDArray[np.bool_]:
            return np.asarray(npz[key], dtype=np.bool_)

        if family == LOGISTIC:
            return ChurnLinearModel(
                version=str(npz["version"]),
                feature_names=tuple(str(n) for n in npz["feature_names"]),
                log_feature=flags("log_feature"),
                mean=floats("mean"),
                scale=floats("scale"),
                coef=floats("coef"),
                intercept=float(npz["intercept"][0]),
                horizon_days=int(npz["horizon_days"][0]),
            )
        names = tuple(str(n) for n in npz["feature_names"])
        return ChurnModel(
            version=str(npz["version"]),
            feature_names=FEATURE_NAMES if _subset(names) else names,
            reference=_widen(names, floats("reference")),
            baseline=float(npz["baseline"][0]),
            tree_roots=ints("tree_roots"),
            node_feature=_renumber(names, ints("node_feature")),
            node_threshold=floats("node_threshold"),
            node_missing_left=flags("node_missing_left"),
            node_left=ints("node_left"),
            node_right=ints("node_right"),
            node_is_leaf=flags("node_is_leaf"),
            node_value=floats("node_value"),
            depth=int(npz["depth"][0]),
            calib_slope=float(npz["calibration"][0]),
            calib_intercept=float(npz["calibration"][1]),
            horizon_days=int(npz["horizon_days"][0]),
        )
