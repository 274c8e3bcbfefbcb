"""What the dashboard reads from: the running server's handlers and optional capabilities.

The pages call the same handler and engine as the RPCs (``Handlers.preview_recommendations``,
the churn predictor) and record nothing. Capabilities that not every build has (similar items,
a user's stats) are passed in explicitly; a page shows their section only when one is given.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from recgrpc import domain

if TYPE_CHECKING:  # the server starts the dashboard: no import of it at run time
    from recgrpc.server.handlers import Handlers

SimilarItems = Callable[[str, str, int], Sequence[domain.ScoredItem]]
"""``(item_id, mode, limit) -> neighbours``, best first; raises NotFound for an unknown item."""
UserStats = Callable[[str], Mapping[str, object]]
"""``user_id -> {statistic name: value}`` (served, clicked, CTR, ...)."""


@dataclass(frozen=True)
class Capabilities:
    """Optional sources. ``similar_items`` fills the neighbours sections (one per mode of
    ``neighbour_modes``) and the user's "similar to what they did last"; ``user_stats`` their
    stats."""

    similar_items: SimilarItems | None = None
    neighbour_modes: tuple[str, ...] = ("behaviour", "content", "embedding")
    user_stats: UserStats | None = None


@dataclass(frozen=True)
class Sources:
    handlers: Handlers
    capabilities: Capabilities = field(default_factory=Capabilities)

    def now(self) -> datetime:
        return self.handlers.clock()
