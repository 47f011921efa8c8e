"""The exact walk of tied moments (analytics/funnel.py) against an exhaustive search."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from analytics.funnel import reached


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
