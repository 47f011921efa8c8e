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
from collections.abc import Iterable, Mapping, Sequence
from itertools import groupby

import numpy as np


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


def from_keys(
    keys: Mapping[str, np.ndarray], t_bits: int, steps: Sequence[str], window: int
) -> list[int]:
    """Users reaching each step, from each step type's sorted keys ``user << t_bits | time``
    (``UserSets.funnel_keys``; times in microseconds from any origin).

    PERF: each step is one ``searchsorted`` of the chains so far into the next type's keys:
    the first key after, which is the user's next event of that type, strictly later.
    Without equal moments, the earliest later event is the best next step. A user with a
    next-step candidate at the very moment of a chain's last event is walked exactly
    (``walk``) instead: without such a tie along any chain, the strict choices are the best
    ones, and no event is used twice.
    """
    counts = [0] * len(steps)
    shift = np.uint64(t_bits)
    mask = np.uint64((1 << t_bits) - 1)
    # The chains from every first-step event, one step at a time. A tie (the user has a
    # next-step event at the very moment of the chain's last one) makes the strict rule
    # wrong for that user: such users are set aside and walked exactly.
    chain = keys[steps[0]]
    start = chain & mask
    reached_by: list[np.ndarray] = [chain >> shift]
    tied_parts: list[np.ndarray] = []
    for i, step in enumerate(steps[1:], 1):
        following = keys[step]
        if not len(chain) or not len(following):
            reached_by.extend(np.zeros(0, np.uint64) for _ in range(len(steps) - i))
            break
        n = len(following)
        at = np.searchsorted(following, chain, side="left")
        if step == steps[i - 1]:
            at = at + 1  # past the chain's own event (an equal key after it is a tie)
        inside = at < n
        found = following[np.minimum(at, n - 1)]
        equal = inside & (found == chain)
        if equal.any():
            tied_parts.append(chain[equal] >> shift)
        found_user = found >> shift
        keep = (
            inside
            & ~equal
            & (found_user == (chain >> shift))
            & ((found & mask) - start <= np.uint64(window))
        )
        chain, start = found[keep], start[keep]
        reached_by.append(found_user[keep])
        if len(chain) > 1:
            # Chains that reached the same event (runs of equal keys: they are sorted) have
            # the same future; the latest start of each leaves the most of the window.
            first = np.empty(len(chain), dtype=bool)
            first[0] = True
            np.not_equal(chain[1:], chain[:-1], out=first[1:])
            runs = np.flatnonzero(first)
            chain, start = chain[runs], np.maximum.reduceat(start, runs)
    tied = np.unique(np.concatenate(tied_parts)) if tied_parts else np.zeros(0, np.uint64)
    if len(tied):
        rows: list[tuple[int, int, str]] = []
        for kind, k in keys.items():
            mine = k[np.isin(k >> shift, tied)]
            rows.extend(
                zip(
                    (mine >> shift).tolist(),
                    (mine & mask).tolist(),
                    [kind] * len(mine),
                    strict=True,
                )
            )
        counts = walk(((str(u), t, kind) for u, t, kind in rows), steps, window)
        reached_by = [users[~np.isin(users, tied)] for users in reached_by]
    return [c + _distinct(users) for c, users in zip(counts, reached_by, strict=True)]


def encode_keys(
    parts: Sequence[tuple[np.ndarray, np.ndarray]], origin: int, t_bits: int
) -> np.ndarray:
    """Sorted uint64 keys ``user << t_bits | (time - origin)`` of (user numbers, times in
    microseconds) arrays; every time must lie in ``[origin, origin + 2**t_bits)``."""
    if not parts:
        return np.zeros(0, np.uint64)
    users = np.concatenate([p[0] for p in parts]).astype(np.uint64)
    times = (np.concatenate([p[1] for p in parts]) - origin).astype(np.uint64)
    return np.sort((users << np.uint64(t_bits)) | times)


def from_events(
    events: Mapping[str, Sequence[tuple[np.ndarray, np.ndarray]]],
    steps: Sequence[str],
    window: int,
) -> list[int]:
    """``from_keys`` from (user numbers, times) arrays per type, over the span they cover."""
    times = [p[1] for parts in events.values() for p in parts if len(p[1])]
    if not times:
        return [0] * len(steps)
    origin = min(int(t.min()) for t in times)
    t_bits = (max(int(t.max()) for t in times) - origin + 1).bit_length()
    keys = {k: encode_keys(events.get(k, []), origin, t_bits) for k in dict.fromkeys(steps)}
    return from_keys(keys, t_bits, steps, window)


def _distinct(sorted_users: np.ndarray) -> int:
    return int(np.count_nonzero(np.diff(sorted_users))) + 1 if len(sorted_users) else 0
