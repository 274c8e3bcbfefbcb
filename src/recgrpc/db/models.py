"""Tables (DESIGN.md §3). Times are stored in UTC and always read back timezone-aware."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from recgrpc.domain import utcnow
from recgrpc.validation import (
    MAX_ID_LENGTH,
    MAX_RECSET_ID_LENGTH,
    MAX_TEXT_LENGTH,
    MAX_TITLE_LENGTH,
)

# Columns that hold what callers send take their lengths from the validation rules (one place):
# whatever the API or an import accepts fits.
ID = String(MAX_ID_LENGTH)
RecsetID = String(MAX_RECSET_ID_LENGTH)
ShortText = String(MAX_TEXT_LENGTH)
# SQLite only auto-increments INTEGER PRIMARY KEY; PostgreSQL gets a 64-bit identity.
BigID = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite keeps no zone of its own)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database; use UTC-aware times")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime()}  # noqa: RUF012 - SQLAlchemy's declared API


class User(Base):
    __tablename__ = "users"

    user_id: Mapped[str] = mapped_column(ID, primary_key=True)
    attributes: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class Item(Base):
    __tablename__ = "items"

    item_id: Mapped[str] = mapped_column(ID, primary_key=True)
    title: Mapped[str] = mapped_column(String(MAX_TITLE_LENGTH), default="")
    categories: Mapped[list[str]] = mapped_column(JSON, default=list)
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    attributes: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class Preference(Base):
    """A user's interest in a category (the preference table)."""

    __tablename__ = "preferences"

    user_id: Mapped[str] = mapped_column(
        ID, ForeignKey("users.user_id", ondelete="CASCADE"), primary_key=True
    )
    category: Mapped[str] = mapped_column(ID, primary_key=True)
    score: Mapped[float] = mapped_column(Float)


class Interaction(Base):
    __tablename__ = "interactions"
    __table_args__ = (
        Index("ix_interactions_user_time", "user_id", "occurred_at"),
        Index("ix_interactions_item_time", "item_id", "occurred_at"),
        Index("ix_interactions_time", "occurred_at"),
    )

    id: Mapped[int] = mapped_column(BigID, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(ID, unique=True)
    user_id: Mapped[str] = mapped_column(ID)
    item_id: Mapped[str] = mapped_column(ID)
    type: Mapped[str] = mapped_column(String(32))
    value: Mapped[float] = mapped_column(Float, default=0.0)
    content_type: Mapped[str] = mapped_column(ShortText, default="")
    platform: Mapped[str] = mapped_column(ShortText, default="")
    event_metadata: Mapped[dict[str, str]] = mapped_column("metadata", JSON, default=dict)
    recset_id: Mapped[str] = mapped_column(RecsetID, default="")
    occurred_at: Mapped[datetime]
    received_at: Mapped[datetime] = mapped_column(default=utcnow)


class Recommendation(Base):
    """The stored top-N per user: the latest list served or precomputed by training."""

    __tablename__ = "recommendations"
    __table_args__ = (UniqueConstraint("user_id", "item_id", name="uq_recommendations_user_item"),)

    id: Mapped[int] = mapped_column(BigID, primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(ID)
    item_id: Mapped[str] = mapped_column(ID)
    rank: Mapped[int] = mapped_column(Integer)
    score: Mapped[float] = mapped_column(Float)
    algorithm: Mapped[str] = mapped_column(String(32))
    model_version: Mapped[str] = mapped_column(String(64), default="")
    recset_id: Mapped[str] = mapped_column(RecsetID, default="")
    generated_at: Mapped[datetime] = mapped_column(default=utcnow)
    is_clicked: Mapped[bool] = mapped_column(Boolean, default=False)
    is_dismissed: Mapped[bool] = mapped_column(Boolean, default=False)


class Impression(Base):
    """One served list (what the user was shown), for online metrics and attribution."""

    __tablename__ = "impressions"
    __table_args__ = (Index("ix_impressions_user_time", "user_id", "served_at"),)

    recset_id: Mapped[str] = mapped_column(RecsetID, primary_key=True)
    user_id: Mapped[str] = mapped_column(ID)
    algorithm: Mapped[str] = mapped_column(String(32))
    model_version: Mapped[str] = mapped_column(String(64), default="")
    fallback_reason: Mapped[str] = mapped_column(String(256), default="")
    item_ids: Mapped[list[str]] = mapped_column(JSON, default=list)
    platform: Mapped[str] = mapped_column(ShortText, default="")
    served_at: Mapped[datetime] = mapped_column(default=utcnow)


class Feedback(Base):
    __tablename__ = "feedback"
    __table_args__ = (
        Index("ix_feedback_user_time", "user_id", "created_at"),
        Index("ix_feedback_recset", "recset_id"),
    )

    id: Mapped[int] = mapped_column(BigID, primary_key=True, autoincrement=True)
    # The caller's idempotency key (as interactions' event_id): a retried call stores once.
    feedback_id: Mapped[str] = mapped_column(ID, unique=True, default=lambda: str(uuid.uuid4()))
    recset_id: Mapped[str] = mapped_column(RecsetID, default="")
    user_id: Mapped[str] = mapped_column(ID)
    item_id: Mapped[str] = mapped_column(ID)
    clicked: Mapped[bool] = mapped_column(Boolean, default=False)
    dismissed: Mapped[bool] = mapped_column(Boolean, default=False)
    rating: Mapped[float | None] = mapped_column(Float, nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ChurnPrediction(Base):
    __tablename__ = "churn_predictions"
    __table_args__ = (Index("ix_churn_predictions_user_time", "user_id", "predicted_at"),)

    id: Mapped[int] = mapped_column(BigID, primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(ID)
    as_of: Mapped[datetime]
    risk: Mapped[float] = mapped_column(Float)
    level: Mapped[str] = mapped_column(String(16))
    factors: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    model_version: Mapped[str] = mapped_column(String(64))
    horizon_days: Mapped[int] = mapped_column(Integer)
    predicted_at: Mapped[datetime] = mapped_column(default=utcnow)


class ModelArtifact(Base):
    """Versioned model artifacts (npz bytes, never pickle) with their params and metrics."""

    __tablename__ = "models"
    __table_args__ = (Index("ix_models_kind_status", "kind", "status"),)

    id: Mapped[int] = mapped_column(BigID, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(32))  # "recommender" or "churn"
    version: Mapped[str] = mapped_column(String(64), unique=True)
    status: Mapped[str] = mapped_column(String(16))  # candidate, active, retired
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    artifact: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    activated_at: Mapped[datetime | None] = mapped_column(nullable=True)


class ItemNeighbours(Base):
    """The item-neighbour artifact (npz) built by a training run, keyed by its recommender's
    version: the active recommender names the neighbour table served with it."""

    __tablename__ = "item_neighbours"

    model_version: Mapped[str] = mapped_column(String(64), primary_key=True)
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    artifact: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ChangedUser(Base):
    """SQLite's change feed (``db.sqlite_feed``): a user whose stored context a transaction
    changed, written in that transaction; each server process polls the rows after the last it
    saw and evicts those users' cached contexts. Rows older than a minute are trimmed by later
    writes. An erasure deletes the user's rows and announces itself without a user (every
    process then forgets all its cached contexts), so no erased id stays here. Unused on
    PostgreSQL, whose feed is LISTEN/NOTIFY."""

    __tablename__ = "changed_users"
    # AUTOINCREMENT: a sequence number is never reused, even after the newest rows are trimmed.
    __table_args__ = {"sqlite_autoincrement": True}  # noqa: RUF012 - SQLAlchemy's declared API

    seq: Mapped[int] = mapped_column(BigID, primary_key=True, autoincrement=True)
    user_id: Mapped[str | None] = mapped_column(ID)  # None: an erasure, forget everyone
    origin: Mapped[str] = mapped_column(String(16))
    changed_at: Mapped[float] = mapped_column(Float)  # seconds since the epoch


USER_TABLES = (
    Preference,
    Interaction,
    Recommendation,
    Impression,
    Feedback,
    ChurnPrediction,
    User,
)
"""Every table holding rows about a user, children before parents (for erasure)."""
