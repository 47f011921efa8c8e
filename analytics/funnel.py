"""The exact funnel walk of one user's step events, for users the ASOF joins of
``analytics/queries.py`` cannot take: those with two step events at the same moment.

A user reaches step k when there are k distinct counting events e1..ek, e_i of type
``steps[i]``, with non-decreasing times and ek at most ``window`` after e1. Going through the
user's events moment by moment (a moment: all events at one timestamp), it keeps for each
step the latest start of a chain that has reached it (a later start leaves more of the
window, and every chain is complete by now, so nothing else about it matters). At a
moment t, a chain at step i (or a new chain starting at t) can take the next steps i+1 ..
j from the events of that moment as long as their types are there in enough numbers
(each event is taken once in a chain), and t is within the window of its start.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from itertools import groupby


def reached(events: Iterable[tuple[int, str]], steps: Sequence[str], window: int) -> int:
    """How many steps one user reaches, from their events ``(t, event_type)`` sorted by
    ``t`` (microseconds), ``window`` in microseconds."""
    k = len(steps)
    latest: list[int | None] = [None] * k  # latest start of a chain that reached step i+1
    for t, moment in groupby(events, key=lambda e: e[0]):
        here = Counter(e[1] for e in moment)
        found = list(latest)
        starts = [(t, -1)] + [(s, i) for i, s in enumerate(latest) if s is not None]
        for start, done in starts:  # ``done``: index of the last step the chain has
            if done == k - 1 or t - start > window:
                continue
            taken: Counter[str] = Counter()
            for j in range(done + 1, k):
                taken[steps[j]] += 1
                if taken[steps[j]] > here[steps[j]]:
                    break
                current = found[j]
                if current is None or start > current:
                    found[j] = start
        latest = found
    best = 0
    for i, s in enumerate(latest):
        if s is not None:
            best = i + 1
    return best


def walk(rows: Iterable[tuple[str, int, str]], steps: Sequence[str], window: int) -> list[int]:
    """Users reaching each step, from ``(user_id, t, event_type)`` rows of several users."""
    per_user: dict[str, list[tuple[int, str]]] = {}
    for user, t, event_type in rows:
        per_user.setdefault(user, []).append((t, event_type))
    users = [0] * len(steps)
    for events in per_user.values():
        events.sort()
        for i in range(reached(events, steps, window)):
            users[i] += 1
    return users
