"""The serving view of the catalogue: item ids in a fixed order, with categories and ages."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from itertools import repeat

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class CatalogIndex:
    """Active items in a fixed order; every score vector in serving is aligned with it."""

    item_ids: tuple[str, ...]
    categories: tuple[tuple[str, ...], ...]
    """Each item's distinct categories."""
    created_at: npt.NDArray[np.float64]  # Unix seconds
    position: dict[str, int] = field(repr=False)
    by_category: dict[str, npt.NDArray[np.int64]] = field(repr=False)

    @classmethod
    def build(
        cls, rows: Sequence[tuple[str, Sequence[str], Sequence[str], datetime]]
    ) -> CatalogIndex:
        """From ``(item_id, categories, tags, created_at)`` rows (see db.queries.catalogue)."""
        item_ids = tuple(r[0] for r in rows)
        categories = tuple(tuple(dict.fromkeys(r[1])) for r in rows)  # without repeats
        members: dict[str, list[int]] = {}
        for idx, cats in enumerate(categories):
            for cat in cats:
                members.setdefault(cat, []).append(idx)
        return cls(
            item_ids=item_ids,
            categories=categories,
            created_at=np.array([r[3].timestamp() for r in rows], dtype=np.float64),
            position={item_id: i for i, item_id in enumerate(item_ids)},
            by_category={c: np.array(ix, dtype=np.int64) for c, ix in members.items()},
        )

    def __len__(self) -> int:
        return len(self.item_ids)

    def indices(self, item_ids: Iterable[str]) -> npt.NDArray[np.int64]:
        """Positions of the given ids that are in the catalogue (unknown ids are skipped)."""
        found = self.positions_or(item_ids, -1)
        return found[found >= 0]

    def positions_or(self, item_ids: Iterable[str], missing: int) -> npt.NDArray[np.int64]:
        """Positions of the given ids, ``missing`` for each id not in the catalogue (one dict
        lookup per id, no Python loop: ranking points unknown ids at a spare score slot)."""
        return np.fromiter(map(self.position.get, item_ids, repeat(missing)), dtype=np.int64)

    def category_mask(self, categories: Iterable[str]) -> npt.NDArray[np.bool_]:
        """True for items in at least one of ``categories``."""
        mask = np.zeros(len(self.item_ids), dtype=np.bool_)
        for cat in categories:
            members = self.by_category.get(cat)
            if members is not None:
                mask[members] = True
        return mask
