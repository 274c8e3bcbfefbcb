"""The recommender artifact format: a round trip keeps ids, features and scores; corrupt
artifacts are rejected with a reason (a small model trained in memory, no database)."""

from __future__ import annotations

import dataclasses
import io
import zipfile

import numpy as np
import pytest

from recgrpc.config import Settings
from recgrpc.db import training_data as td
from recgrpc.model import artifact
from recgrpc.model.features import build_interaction_data
from recgrpc.model.recommender import HybridRecommender, TrainingParams
from tests.recommender_data import T0, taste_data

# -- artifact ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained_arrays() -> artifact.RecommenderArrays:
    """A small model trained in memory (no database needed for the format tests)."""
    data = taste_data(n_users=40, n_items=30)
    rows = td.TrainingRows(
        items=[(it.item_id, list(it.categories), list(it.tags), T0) for it in data.items],
        users=[(u.user_id, dict(u.attributes)) for u in data.users],
        preferences=[(u.user_id, c, s) for u in data.users for c, s in u.preferences.items()],
        interactions=[
            (e.user_id, e.item_id, e.type.value, e.value, e.occurred_at) for e in data.events
        ],
        feedback=[],
    )
    built = build_interaction_data(rows, Settings())
    rec = HybridRecommender(
        TrainingParams(components=8),
        built.user_ids,
        built.item_ids,
        user_feature_names=built.user_feature_names,
        item_feature_names=built.item_feature_names,
        item_features=built.item_features,
        user_features=built.user_features,
    )
    from scipy import sparse

    interactions = sparse.coo_matrix(
        (np.ones(built.pair_user.size, dtype=np.float32), (built.pair_user, built.pair_item)),
        shape=(built.n_users, built.n_items),
    )
    rec.fit_partial(interactions, epochs=3)
    return rec.to_arrays(
        "v-test",
        user_trained_until=np.zeros(built.n_users),
        user_train_weight=np.ones(built.n_users, dtype=np.float32),
        newest_event=1.0,
    )


def test_artifact_round_trip_keeps_ids_features_and_scores(
    trained_arrays: artifact.RecommenderArrays,
) -> None:
    blob = artifact.encode(trained_arrays)
    with zipfile.ZipFile(io.BytesIO(blob)) as archive:
        assert all(name.endswith(".npy") for name in archive.namelist())
    loaded, arrays = HybridRecommender.from_bytes(blob)
    assert arrays.version == "v-test"
    assert arrays.params["components"] == 8
    for f in dataclasses.fields(artifact.RecommenderArrays):
        before, after = getattr(trained_arrays, f.name), getattr(arrays, f.name)
        if isinstance(before, np.ndarray):
            np.testing.assert_array_equal(before, after)
    assert loaded.item_ids == tuple(trained_arrays.item_ids.tolist())
    original = HybridRecommender.from_arrays(trained_arrays).item_representations()
    np.testing.assert_allclose(loaded.item_representations()[1], original[1])


def _tampered(arrays: artifact.RecommenderArrays, **changes: object) -> bytes:
    return artifact.encode(dataclasses.replace(arrays, **changes))  # type: ignore[arg-type]


def test_corrupt_artifacts_are_rejected_with_a_reason(
    trained_arrays: artifact.RecommenderArrays,
) -> None:
    good = artifact.encode(trained_arrays)
    emb = trained_arrays.item_feature_embeddings
    nan_emb = emb.copy()
    nan_emb[0, 0] = np.nan
    cases = {
        "not a readable npz": good[: len(good) // 2],
        "empty": b"",
        "NaN": _tampered(trained_arrays, item_feature_embeddings=nan_emb),
        "item_feature_embeddings has shape": _tampered(
            trained_arrays, item_feature_embeddings=emb[:-1]
        ),
        "user_ids are not unique": _tampered(
            trained_arrays,
            user_ids=np.array(["same"] * trained_arrays.user_ids.size),
        ),
        "per-user arrays": _tampered(trained_arrays, user_trained_until=np.zeros(2)),
        "item feature index out of range": _tampered(
            trained_arrays,
            item_features_indices=trained_arrays.item_features_indices + 10_000,
        ),
    }
    for reason, blob in cases.items():
        with pytest.raises(ValueError, match=reason):
            artifact.decode(blob)
    # An object array would need pickle to load: refused, never unpickled.
    buffer = io.BytesIO()
    with np.load(io.BytesIO(good)) as archive:
        payload = {name: archive[name] for name in archive.files}
    payload["user_ids"] = np.array([object()] * 3, dtype=object)
    np.savez(buffer, **payload)
    with pytest.raises(ValueError, match="not a readable npz"):
        artifact.decode(buffer.getvalue())
