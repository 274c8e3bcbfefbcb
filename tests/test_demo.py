"""The demo generator: deterministic, with the planted structure models are meant to find."""

from __future__ import annotations

import statistics
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from recgrpc import domain
from recgrpc.cli import main
from recgrpc.db import Database
from recgrpc.db import models as m
from recgrpc.db.queries import count_rows
from recgrpc.jobs.demo import DemoData, generate_demo, write_demo

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
SMALL = {"n_users": 200, "n_items": 150, "n_interactions": 5000, "now": NOW}


@pytest.fixture(scope="module")
def demo() -> DemoData:
    return generate_demo(seed=7, **SMALL)  # type: ignore[arg-type]


def _on_taste(data: DemoData, event: domain.Interaction, items: dict[str, domain.Item]) -> bool:
    taste = data.taste_at(event.user_id, event.occurred_at)
    return bool(set(items[event.item_id].categories) & set(taste))


def test_same_seed_gives_the_same_world_and_another_seed_does_not() -> None:
    first = generate_demo(seed=11, **SMALL)  # type: ignore[arg-type]
    again = generate_demo(seed=11, **SMALL)  # type: ignore[arg-type]
    other = generate_demo(seed=12, **SMALL)  # type: ignore[arg-type]
    assert first.items == again.items
    assert first.users == again.users
    assert first.interactions == again.interactions
    assert first.impressions == again.impressions
    assert first.feedback == again.feedback
    assert first.profiles == again.profiles
    assert first.interactions != other.interactions
    assert first.churner_ids != other.churner_ids


def test_sizes_ids_and_times_are_consistent(demo: DemoData) -> None:
    assert len(demo.users) == 200
    assert len(demo.items) == 150
    assert len(demo.interactions) == 5000
    assert len({e.event_id for e in demo.interactions}) == 5000
    created = {it.item_id: it.created_at for it in demo.items}
    times = [e.occurred_at for e in demo.interactions]
    assert times == sorted(times)
    assert min(times) >= NOW - timedelta(days=demo.history_days)
    assert max(times) <= NOW
    for event in demo.interactions:
        item_created = created[event.item_id]
        assert item_created is not None
        assert item_created <= event.occurred_at
    user_ids = {u.user_id for u in demo.users}
    assert {e.user_id for e in demo.interactions} == user_ids  # everyone has some history
    recsets = {imp.recset_id for imp in demo.impressions}
    assert {f.feedback.recset_id for f in demo.feedback} <= recsets
    assert {e.recset_id for e in demo.interactions} - {""} <= recsets


def test_catalogue_looks_like_a_catalogue(demo: DemoData) -> None:
    assert 20 <= len(demo.categories) <= 40
    assert all(1 <= len(it.categories) <= 3 and it.tags and it.title for it in demo.items)
    assert set().union(*(it.categories for it in demo.items)) == set(demo.categories)
    ages = sorted((NOW - it.created_at).days for it in demo.items if it.created_at)
    # New items keep arriving: some from the last month, some older than the history.
    assert ages[0] < 30
    assert ages[-1] > 300
    per_item = Counter(e.item_id for e in demo.interactions)
    top_decile = sum(c for _, c in per_item.most_common(len(demo.items) // 10))
    assert top_decile > 0.3 * len(demo.interactions)  # popularity is skewed


def test_interaction_mix_and_ratings_follow_taste(demo: DemoData) -> None:
    kinds = Counter(e.type for e in demo.interactions)
    T = domain.InteractionType
    assert kinds[T.VIEW] > 2 * kinds[T.CLICK] > 2 * kinds[T.LIKE] > kinds[T.PURCHASE] > 0
    assert kinds[T.RATING] > 0
    items = {it.item_id: it for it in demo.items}
    on = [e.value for e in demo.interactions if e.type is T.RATING and _on_taste(demo, e, items)]
    off = [
        e.value for e in demo.interactions if e.type is T.RATING and not _on_taste(demo, e, items)
    ]
    assert all(1 <= v <= 5 for v in on + off)
    assert statistics.mean(on) > statistics.mean(off) + 1.0


def test_users_interact_mostly_within_their_taste(demo: DemoData) -> None:
    items = {it.item_id: it for it in demo.items}
    share = statistics.mean(_on_taste(demo, e, items) for e in demo.interactions)
    assert share > 0.75
    # Against someone else's taste the same events mostly miss: the taste is what explains them.
    users = sorted(demo.profiles)
    shifted = dict(zip(users, users[1:] + users[:1], strict=True))
    miss = statistics.mean(
        bool(set(items[e.item_id].categories) & set(demo.profiles[shifted[e.user_id]].taste))
        for e in demo.interactions
    )
    assert miss < share - 0.4


def test_preferences_state_the_initial_taste_for_most_users(demo: DemoData) -> None:
    stating = [u for u in demo.users if u.preferences]
    assert 0.55 < len(stating) / len(demo.users) < 0.85
    for user in stating:
        profile = demo.profiles[user.user_id]
        assert profile.states_preferences
        assert set(user.preferences) == set(profile.initial_taste)
        assert all(0 < s <= 1 for s in user.preferences.values())


def test_drifters_change_taste_midway(demo: DemoData) -> None:
    assert demo.drifter_ids
    items = {it.item_id: it for it in demo.items}
    late = [
        e
        for e in demo.interactions
        if e.user_id in demo.drifter_ids and e.occurred_at >= demo.profiles[e.user_id].drift_at  # type: ignore[operator]
    ]
    old_taste = statistics.mean(
        bool(set(items[e.item_id].categories) & set(demo.profiles[e.user_id].initial_taste))
        for e in late
    )
    new_taste = statistics.mean(_on_taste(demo, e, items) for e in late)
    assert new_taste > old_taste


def test_planted_churners_fade_out_well_before_now() -> None:
    # Large enough that churners' fading weeks hold a few hundred shown items.
    demo = generate_demo(seed=3, n_users=800, n_items=300, n_interactions=20_000, now=NOW)
    churners = demo.churner_ids
    assert 0.2 < len(churners) / len(demo.users) < 0.3
    last = demo.last_activity()
    churner_idle = [(NOW - last[u]).days for u in churners]
    loyal_idle = [(NOW - t).days for u, t in last.items() if u not in churners]
    assert min(churner_idle) >= 30
    assert statistics.median(loyal_idle) < 10
    assert statistics.median(churner_idle) > 3 * statistics.median(loyal_idle) + 30

    def rates(fading: bool) -> tuple[float, float]:
        """Click and dismiss rates of churners in their fade, or of loyal users throughout."""

        def counted(user_id: str, when: datetime) -> bool:
            profile = demo.profiles[user_id]
            if not fading:
                return not profile.churner
            return profile.fade_from is not None and when >= profile.fade_from

        recsets = {i.recset_id for i in demo.impressions if counted(i.user_id, i.served_at)}
        shown = sum(len(i.item_ids) for i in demo.impressions if i.recset_id in recsets)
        mine = [f.feedback for f in demo.feedback if f.feedback.recset_id in recsets]
        return sum(f.clicked for f in mine) / shown, sum(f.dismissed for f in mine) / shown

    churn_ctr, churn_dismiss = rates(fading=True)
    loyal_ctr, loyal_dismiss = rates(fading=False)
    assert churn_ctr < loyal_ctr
    assert churn_dismiss > loyal_dismiss


def test_loyal_users_on_a_break_go_quiet_and_come_back(demo: DemoData) -> None:
    on_break = [p for p in demo.profiles.values() if p.break_from is not None]
    assert on_break
    assert not any(p.churner for p in on_break)
    came_back = 0
    for profile in on_break:
        assert profile.break_from is not None
        resume = profile.break_from + timedelta(days=profile.break_days)
        assert resume <= NOW - timedelta(days=14)
        times = [e.occurred_at for e in demo.interactions if e.user_id == profile.user_id]
        assert not [t for t in times if profile.break_from <= t < resume]
        came_back += max(times) >= resume
    assert came_back >= 0.9 * len(on_break)


def test_bad_sizes_are_refused() -> None:
    with pytest.raises(ValueError, match="at least"):
        generate_demo(n_users=0, n_items=10, n_interactions=10, now=NOW)
    with pytest.raises(ValueError, match="timezone"):
        generate_demo(now=datetime(2026, 1, 1))


def _counts(db: Database) -> dict[str, int]:
    with db.reader() as session:
        return {
            model.__tablename__: count_rows(session, model)
            for model in (m.Item, m.User, m.Preference, m.Interaction, m.Impression, m.Feedback)
        }


def test_demo_loads_and_reloading_adds_nothing(database: Database, demo: DemoData) -> None:
    report = write_demo(database, demo)
    assert report.new_interactions == 5000
    counts = _counts(database)
    assert counts == {
        "items": 150,
        "users": 200,
        "preferences": sum(len(u.preferences) for u in demo.users),
        "interactions": 5000,
        "impressions": len(demo.impressions),
        "feedback": len(demo.feedback),
    }
    again = write_demo(database, demo)
    assert (again.new_interactions, again.new_impressions, again.new_feedback) == (0, 0, 0)
    assert _counts(database) == counts
    with database.reader() as session:
        dismissed = count_rows(session, m.Feedback, dismissed=True)
    assert dismissed == sum(f.feedback.dismissed for f in demo.feedback) > 0


def test_demo_command_is_idempotent(database_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--database-url", database_url, "demo", "--seed", "5", "--users", "80"]
    argv += ["--items", "60", "--interactions", "1500"]
    assert main(argv) == 0
    assert "1500 interactions (1500 new)" in capsys.readouterr().out
    assert main(argv) == 0
    assert "1500 interactions (0 new)" in capsys.readouterr().out
    db = Database(database_url)
    try:
        counts = _counts(db)
    finally:
        db.dispose()
    assert (counts["users"], counts["items"], counts["interactions"]) == (80, 60, 1500)
