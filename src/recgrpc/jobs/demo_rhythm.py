"""When demo users act: a daily activity grid (weekly rhythm, week-to-week noise, quiet users'
sessions, breaks, churners' fades) from which event times are drawn.

Real activity is lumpy: busier at weekends, some weeks far busier than others, and some users
only visit in sessions weeks apart and still come back. That is what keeps recency alone from
telling churners apart. Times are float days relative to ``now``, as in ``demo_world``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np

from recgrpc.jobs.demo_data import FloatArray, IntArray

WEEKDAY_WEIGHT = np.array([0.9, 0.9, 0.95, 1.0, 1.1, 1.5, 1.35])
"""Mean activity by weekday, Monday first: weekends are busier."""
WEEK_NOISE_SHAPE = 2.0
"""Gamma shape of each user's week-to-week activity (mean 1; coefficient of variation 0.7)."""
SESSION_BURST = 3.0
"""A quiet user's activity on a session day, relative to a regular user's day."""


@dataclass(frozen=True, slots=True)
class Window:
    """Each user's activity window and its planted gaps (arrays over users)."""

    start: FloatArray
    end: FloatArray
    fade_start: FloatArray
    break_at: FloatArray
    break_len: FloatArray
    session_gap: FloatArray
    """Mean days between a quiet user's sessions; 0 for users active any day."""


@dataclass(frozen=True, slots=True)
class ActivityGrid:
    """Relative activity of every user on every day of the history (users x days)."""

    first_day: int
    weights: FloatArray

    @property
    def mass(self) -> FloatArray:
        """Each user's expected share of activity (before their intensity)."""
        total: FloatArray = self.weights.sum(axis=1)
        return total

    def sample(self, rng: np.random.Generator, users: IntArray, window: Window) -> FloatArray:
        """One time per entry of ``users``, drawn by their daily activity, inside their window."""
        n_days = self.weights.shape[1]
        cum = np.cumsum(self.weights.ravel())
        base = np.concatenate([[0.0], cum[n_days - 1 :: n_days][:-1]])
        draw = base[users] + rng.random(users.size) * self.mass[users]
        flat = np.searchsorted(cum, draw, side="right")
        day = np.clip(flat - users * n_days, 0, n_days - 1)
        day_start = self.first_day + day.astype(np.float64)
        lo = np.maximum(day_start, window.start[users])
        hi = np.maximum(np.minimum(day_start + 1.0, window.end[users]), lo)
        # Uniform within the day's part of the window, with any break cut out.
        gap_lo = np.clip(window.break_at[users], lo, hi)
        gap_hi = np.clip(window.break_at[users] + window.break_len[users], lo, hi)
        t = lo + rng.random(users.size) * ((hi - lo) - (gap_hi - gap_lo))
        times: FloatArray = np.where(t >= gap_lo, t + (gap_hi - gap_lo), t)
        return np.minimum(times, 0.0)


def activity_grid(
    rng: np.random.Generator, now: datetime, horizon: float, window: Window
) -> ActivityGrid:
    """The daily activity of every user over the ``horizon`` days before ``now``."""
    n_users = window.start.size
    first_day = -math.ceil(horizon)
    n_days = -first_day
    day_start = first_day + np.arange(n_days, dtype=np.float64)
    s, e = window.start[:, None], window.end[:, None]
    inside = np.clip(np.minimum(e, day_start + 1.0) - np.maximum(s, day_start), 0.0, 1.0)
    b0 = window.break_at[:, None]
    b1 = b0 + window.break_len[:, None]
    on_break = np.clip(np.minimum(b1, day_start + 1.0) - np.maximum(b0, day_start), 0.0, 1.0)
    # A churner's activity falls linearly to zero over their fade.
    middle = day_start + 0.5
    fade_span = np.maximum(e - window.fade_start[:, None], 1e-9)
    fade = np.clip((e - middle) / fade_span, 0.0, 1.0)
    fade = np.where(middle < window.fade_start[:, None], 1.0, fade)
    weekday = np.array([(now + timedelta(days=float(d))).weekday() for d in day_start])
    rhythm = WEEKDAY_WEIGHT[None, :] * rng.lognormal(0.0, 0.25, (n_users, 7))
    weeks = (np.arange(n_days) // 7).astype(np.int64)
    noise = rng.gamma(WEEK_NOISE_SHAPE, 1.0 / WEEK_NOISE_SHAPE, (n_users, int(weeks[-1]) + 1))
    weights = np.maximum(inside - on_break, 0.0) * fade * rhythm[:, weekday] * noise[:, weeks]
    for u in np.flatnonzero(window.session_gap > 0).tolist():
        weights[u] *= SESSION_BURST * _session_days(rng, window, u, first_day, n_days)
    empty = weights.sum(axis=1) <= 0.0
    # Whoever drew no activity at all still acts on their first day.
    first = np.clip(np.floor(window.start - first_day).astype(np.int64), 0, n_days - 1)
    weights[np.flatnonzero(empty), first[empty]] = 1.0
    return ActivityGrid(first_day=first_day, weights=weights)


def _session_days(
    rng: np.random.Generator, window: Window, u: int, first_day: int, n_days: int
) -> FloatArray:
    """1 on the days a quiet user visits (sessions of one or two days, gaps around the mean)."""
    mask = np.zeros(n_days)
    gap = float(window.session_gap[u])
    t = float(window.start[u]) + rng.uniform(0.0, min(gap, 7.0))
    while t < window.end[u]:
        day = int(t - first_day)
        if 0 <= day < n_days:
            mask[day] = 1.0
            if day + 1 < n_days and rng.random() < 0.5:
                mask[day + 1] = 1.0
        t += gap * rng.gamma(4.0, 0.25)
    return mask
