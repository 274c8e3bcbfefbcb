"""Item and user vectors for the approximate-index benches: random, and shaped like trained ones.

Random Gaussian vectors (the random model of bench/recommend_latency.py) are the worst case for
an inverted-file index: no clusters, so the true top 10 is spread over every list. A trained
LightFM model's item vectors are not like that: items of one taste point the same way, norms
spread (popular items are longer) and biases follow popularity. ``trained_like`` draws vectors
with that shape: ``CLUSTERS`` taste directions, each item near one (its category's, mostly),
log-normal norms, bias correlated with the norm; users mix one to three tastes.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import numpy.typing as npt

from recgrpc.model.artifact import RecommenderArrays

CLUSTERS = 200
F32 = npt.NDArray[np.float32]


def random_items(n: int, dims: int, rng: np.random.Generator) -> F32:
    """``[bias | embedding]`` rows like recommend_latency's random model's (the mean of four
    N(0, 0.1) feature vectors: identity, a category, two tags)."""
    shared = rng.normal(0, 0.1, (87, dims + 1)).astype(np.float32)
    own = rng.normal(0, 0.1, (n, dims + 1)).astype(np.float32)
    k = np.arange(n)
    rows = own + shared[k % 30] + shared[30 + k % 50] + shared[80 + k % 7]
    return np.asarray(rows / 4, dtype=np.float32)


def random_users(count: int, dims: int, rng: np.random.Generator) -> F32:
    users = rng.normal(0, 0.1, (count, dims)).astype(np.float32)
    return np.hstack([np.ones((count, 1), dtype=np.float32), users])


def _directions(dims: int, seed: int) -> F32:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(CLUSTERS, dims)).astype(np.float32)
    return centres / np.linalg.norm(centres, axis=1, keepdims=True)


def trained_like_embeddings(
    n: int, dims: int, rng: np.random.Generator, *, seed: int = 7
) -> tuple[F32, F32]:
    """Item embeddings (n x dims) and biases (n) shaped like a trained model's; item i's taste
    is mostly that of its category (``i % 30`` in the benches' catalogues)."""
    centres = _directions(dims, seed)
    taste = np.where(rng.random(n) < 0.7, (np.arange(n) % 30) * 6 + rng.integers(0, 6, n), 0)
    taste = np.where(taste == 0, rng.integers(0, CLUSTERS, n), taste) % CLUSTERS
    noise = rng.normal(0, 1 / np.sqrt(dims), (n, dims)).astype(np.float32)
    spread = rng.uniform(0.3, 0.9, (n, 1)).astype(np.float32)
    direction = centres[taste] * (1 - spread) + noise * spread
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    norm = rng.lognormal(0.0, 0.5, n).astype(np.float32)
    emb = direction * (0.5 * norm[:, None])
    bias = (0.3 * np.log(norm) + rng.normal(0, 0.2, n)).astype(np.float32)
    return emb.astype(np.float32), bias


def trained_like_items(n: int, dims: int, rng: np.random.Generator) -> F32:
    emb, bias = trained_like_embeddings(n, dims, rng)
    return np.hstack([bias[:, None], emb])


def trained_like_user_embeddings(
    count: int, dims: int, rng: np.random.Generator, *, seed: int = 7
) -> F32:
    """User embeddings mixing one to three taste directions, with some noise."""
    centres = _directions(dims, seed)
    users = np.zeros((count, dims), dtype=np.float32)
    for u in range(count):
        picks = rng.integers(0, CLUSTERS, int(rng.integers(1, 4)))
        users[u] = (centres[picks] * rng.uniform(0.5, 1.0, (picks.size, 1))).sum(axis=0)
    users += rng.normal(0, 0.5 / np.sqrt(dims), users.shape).astype(np.float32)
    norm = rng.lognormal(0.0, 0.3, (count, 1)).astype(np.float32)
    return np.asarray(users / np.linalg.norm(users, axis=1, keepdims=True) * norm, np.float32)


def trained_like_users(count: int, dims: int, rng: np.random.Generator) -> F32:
    users = trained_like_user_embeddings(count, dims, rng)
    return np.hstack([np.ones((count, 1), dtype=np.float32), users])


def trained_like_arrays(arrays: RecommenderArrays, rng: np.random.Generator) -> RecommenderArrays:
    """``arrays`` (recommend_latency.random_arrays) with trained-like item identity and user
    identity vectors; category, tag and preference features made small, as training leaves
    them when identities explain most of the data."""
    emb = arrays.item_feature_embeddings.copy()
    bias = arrays.item_feature_biases.copy()
    n, dims = int(arrays.item_ids.shape[0]), int(emb.shape[1])
    # Each item's row is the mean of its 4 features: identity weights 4x so the mean keeps it.
    item_emb, item_bias = trained_like_embeddings(n, dims, rng)
    emb[:n], bias[:n] = 4 * item_emb, 4 * item_bias
    emb[n:] *= 0.1
    bias[n:] *= 0.1
    users = arrays.user_feature_embeddings.copy()
    n_users = int(arrays.user_ids.shape[0])
    users[:n_users] = trained_like_user_embeddings(n_users, dims, rng)
    users[n_users:] *= 0.1
    return replace(
        arrays, item_feature_embeddings=emb, item_feature_biases=bias, user_feature_embeddings=users
    )
