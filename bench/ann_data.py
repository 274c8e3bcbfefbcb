"""Item and user vectors for the approximate-index benches: random, and shaped like trained ones.

Random Gaussian vectors (the random model of bench/recommend_latency.py) are the worst case for
an inverted-file index: no clusters, so the true top 10 is spread over every list. A trained
LightFM model's item vectors are not like that: items of one category point about the same way
(their category's features dominate), norms spread a little (popular items are longer) and
biases follow popularity. ``trained_like`` draws vectors with the demo model's shape.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import numpy.typing as npt

from recgrpc.model.artifact import RecommenderArrays

CATEGORIES = 30
SUBTASTES = 1000
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


def _unit(count: int, dims: int, rng: np.random.Generator) -> F32:
    rows = rng.normal(size=(count, dims)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def _tastes(dims: int, seed: int) -> tuple[F32, F32, F32]:
    """Category directions, sub-taste directions (sub-taste s is in category ``s % 30``) and a
    direction every item shares a little of (a trained model's mean item vector)."""
    rng = np.random.default_rng(seed)
    return _unit(CATEGORIES, dims, rng), _unit(SUBTASTES, dims, rng), _unit(1, dims, rng)[0]


def trained_like_embeddings(
    n: int, dims: int, rng: np.random.Generator, *, seed: int = 7
) -> tuple[F32, F32]:
    """Item embeddings (n x dims) and biases (n) shaped like the demo model's (``recgrpc demo
    && recgrpc train``: embedding norms 1.8-3.5 around 2.5, bias sd 0.18, mean |cos| between
    items 0.19, most items within cos 0.95 of another): a category direction, a sub-taste
    within it, a little of a shared direction and some noise of each item's own."""
    cats, subs, common = _tastes(dims, seed)
    sub = rng.integers(0, SUBTASTES, n)
    noise = rng.uniform(0.1, 0.5, (n, 1)).astype(np.float32) * _unit(n, dims, rng)
    direction = cats[sub % CATEGORIES] + 0.5 * subs[sub] + noise + 0.45 * common
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    z = rng.normal(size=n).astype(np.float32)
    emb = direction * np.exp(np.log(2.46) + 0.12 * z)[:, None]
    bias = -0.07 + 0.08 * z + rng.normal(0, 0.16, n)
    return emb.astype(np.float32), bias.astype(np.float32)


def trained_like_items(n: int, dims: int, rng: np.random.Generator) -> F32:
    emb, bias = trained_like_embeddings(n, dims, rng)
    return np.hstack([bias[:, None], emb])


def trained_like_user_embeddings(
    count: int, dims: int, rng: np.random.Generator, *, seed: int = 7
) -> F32:
    """User embeddings mixing one to three sub-tastes, with noise; norms around 1.5 (the demo
    model's 0.7-2.5)."""
    cats, subs, _ = _tastes(dims, seed)
    users = np.zeros((count, dims), dtype=np.float32)
    for u in range(count):
        picks = rng.integers(0, SUBTASTES, int(rng.integers(1, 4)))
        users[u] = (cats[picks % CATEGORIES] + 0.5 * subs[picks]).sum(axis=0)
    users += 0.5 * _unit(count, dims, rng)
    norm = np.exp(np.log(1.5) + 0.35 * rng.normal(size=(count, 1))).astype(np.float32)
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
