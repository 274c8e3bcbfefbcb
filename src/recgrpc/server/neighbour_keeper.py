"""The active recommender's neighbour table, loaded by the refresher and aligned with the
serving catalogue (``model.similar.SimilarityIndex``) for the discovery RPCs."""

from __future__ import annotations

import logging
import threading

from recgrpc.db import Database, neighbour_store
from recgrpc.model import neighbour_artifact
from recgrpc.model.ranking import NO_MODEL, ServingSnapshot
from recgrpc.model.similar import SimilarityIndex

log = logging.getLogger(__name__)

NO_NEIGHBOURS = "the active model has no neighbour table (trained before item neighbours); retrain"
LOADING = "the neighbour table of the newly active model is still loading"
TRENDING_FALLBACK = ": trending instead"


class NeighbourIndexKeeper:
    """Thread-safe: requests read ``current``; the refresher calls ``refresh``."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._index: SimilarityIndex | None = None
        self._index_catalog: object = None
        self._loaded: tuple[str, neighbour_artifact.NeighbourArrays | None] | None = None
        self._lock = threading.Lock()

    def refresh(self, snap: ServingSnapshot) -> None:
        """Load the active recommender's neighbour artifact when its version changed (after
        each snapshot swap; requests never read the artifact)."""
        version = snap.model_version
        if self._loaded is not None and self._loaded[0] == version:
            self.current(snap)
            return
        arrays = None
        if version:
            with self.db.reader() as session:
                blob = neighbour_store.load_neighbours(session, version)
            if blob is not None:
                try:
                    arrays = neighbour_artifact.decode(blob)
                except ValueError:
                    log.exception("neighbour table of model %s cannot be loaded", version)
        with self._lock:
            self._loaded = (version, arrays)
            self._index = None
        self.current(snap)

    def current(self, snap: ServingSnapshot) -> SimilarityIndex | None:
        """The index aligned with ``snap``'s catalogue and model (re-aligned when only the
        catalogue changed); None while no neighbour table of the active model is loaded."""
        index = self._index
        if (
            index is not None
            and self._index_catalog is snap.catalog
            and (index.version == snap.model_version)
        ):
            return index
        loaded = self._loaded
        if loaded is None or loaded[0] != snap.model_version or loaded[1] is None:
            return None
        with self._lock:
            vectors = None if snap.model is None else snap.model.hybrid[:, 1:]
            index = SimilarityIndex.build(loaded[1], snap.catalog, vectors)
            self._index, self._index_catalog = index, snap.catalog
        return index

    def why_none(self, snap: ServingSnapshot) -> str:
        if snap.model is None:
            return NO_MODEL + TRENDING_FALLBACK
        loaded = self._loaded
        if loaded is None or loaded[0] != snap.model_version:
            return LOADING + TRENDING_FALLBACK
        return NO_NEIGHBOURS + TRENDING_FALLBACK
