"""The exact walk of tied moments (analytics/funnel.py) against an exhaustive search."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from analytics.funnel import from_events, reached


def exhaustive(events: list[tuple[int, str]], steps: list[str], window: int) -> int:
    """The longest prefix of ``steps`` matched by distinct events with non-decreasing times
    within ``window`` of the first: every assignment tried."""
    best = 0

    def extend(level: int, used: frozenset[int], last: int, first: int) -> None:
        nonlocal best
        best = max(best, level)
        if level == len(steps):
            return
        for i, (t, kind) in enumerate(events):
            if i in used or kind != steps[level] or t < last:
                continue
            if level and t - first > window:
                continue
            extend(level + 1, used | {i}, t, t if level == 0 else first)

    extend(0, frozenset(), -(10**18), 0)
    return best


@settings(max_examples=600, deadline=None)
@given(
    events=st.lists(st.tuples(st.integers(0, 6), st.sampled_from("ABC")), min_size=0, max_size=7),
    steps=st.lists(st.sampled_from("ABC"), min_size=2, max_size=4),
    window=st.integers(0, 6),
)
def test_the_walk_matches_an_exhaustive_search(
    events: list[tuple[int, str]], steps: list[str], window: int
) -> None:
    events = sorted(events)
    assert reached(events, steps, window) == exhaustive(events, steps, window)


def test_equal_moments_in_any_order_and_each_event_once() -> None:
    # B listed before A at the same moment still follows it; one A cannot be two steps.
    assert reached([(5, "B"), (5, "A")], ["A", "B"], 0) == 2
    assert reached([(5, "A")], ["A", "A"], 10) == 1
    assert reached([(5, "A"), (5, "A"), (5, "B")], ["A", "B", "A"], 0) == 3
    assert reached([(1, "A"), (9, "B")], ["A", "B"], 7) == 1


@settings(max_examples=400, deadline=None)
@given(
    events=st.lists(
        st.tuples(st.integers(0, 4), st.integers(0, 8), st.sampled_from("ABC")),
        min_size=0,
        max_size=30,
    ),
    steps=st.lists(st.sampled_from("ABC"), min_size=2, max_size=4),
    window=st.integers(0, 8),
    split=st.integers(1, 3),
)
def test_the_vectorised_chains_match_an_exhaustive_search(
    events: list[tuple[int, int, str]], steps: list[str], window: int, split: int
) -> None:
    """from_events (searchsorted chains, ties walked) against the exhaustive search per
    user, with the events spread over several sources as the user sets hold them."""
    per_type: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    for kind in "ABC":
        mine = [(u, t) for u, t, k in events if k == kind]
        for part in range(split):
            chunk = mine[part::split]
            per_type.setdefault(kind, []).append(
                (
                    np.array([u for u, _ in chunk], dtype=np.uint32),
                    np.array([1_700_000_000_000_000 + t for _, t in chunk], dtype=np.int64),
                )
            )
    expected = [0] * len(steps)
    for user in {u for u, _, _ in events}:
        mine = sorted((t, k) for u, t, k in events if u == user)
        for i in range(exhaustive(mine, steps, window)):
            expected[i] += 1
    assert from_events(per_type, steps, window) == expected


def test_chains_meeting_at_one_event_keep_the_latest_start() -> None:
    # A@1 B@2 and A@5 B@6 both go on to C@7; only the chain started at 5 reaches D@11.
    base = 1_700_000_000_000_000
    times = {"A": [1, 5], "B": [2, 6], "C": [7], "D": [11]}
    events = {
        k: [(np.zeros(len(v), np.uint32), np.array([base + t for t in v], np.int64))]
        for k, v in times.items()
    }
    assert from_events(events, ["A", "B", "C", "D"], 6) == [1, 1, 1, 1]
