"""When to merge segments: a size-ratio ("binary counter") rule over contiguous runs of the newest segments.

An index (or a passage store) is a list of immutable segments, oldest first; each write appends one
segment at the end. `plan_merge` looks at their sizes and names the run ``[start, len(sizes))`` to merge
into one segment, or returns None. Only runs that end at the newest segment are ever merged, so segments
stay contiguous: each covers an increasing range of passage ids disjoint from the others'.

The rule: merge from the oldest segment ``i`` whose size is at most ``ratio`` times the total size of
the segments after it. After a merge no segment satisfies it any more, so each segment is more than
``ratio`` times larger than everything newer together; hence

- the number of segments stays below ``1 + log_(1 + ratio)(total / smallest)`` (``ratio=1``: about 17
  segments for 100,000 passages added one at a time, 8 when they come 1,000 at a time);
- each passage is rewritten by merges at most ``2 + log_2(total)`` times over its life (``ratio=1``: the
  segment holding it at least doubles at each merge but the first), so a write costs amortised
  O(change · log(total)), never O(total).

``ratio=1`` minimises that bound (a passage's segment grows by ``min(1 + ratio, 1 + 1/ratio)`` per merge).
Sizes are live passages: a segment that lost most of its rows to deletions is merged sooner, which drops
the deleted rows. The function is pure and imports nothing from lateragkit, so the index backends and the
passage store apply the same rule.
"""
from __future__ import annotations

from collections.abc import Sequence

__all__ = ["plan_merge", "DEFAULT_RATIO"]

DEFAULT_RATIO = 1.0


def plan_merge(segment_sizes: Sequence[int], *, ratio: float = DEFAULT_RATIO) -> tuple[int, int] | None:
    """The run ``(start, end)`` of segments to merge into one (``end == len(segment_sizes)``), or None.

    ``segment_sizes`` are the live sizes of the segments, oldest first (negative sizes are refused).
    The run is the longest one ending at the newest segment whose first segment is at most ``ratio``
    times the total of the segments after it; runs of a single segment are never returned.
    """
    if not ratio > 0:
        raise ValueError(f"ratio must be positive, got {ratio!r}")
    sizes = [int(s) for s in segment_sizes]
    if any(s < 0 for s in sizes):
        raise ValueError(f"segment sizes must be non-negative, got {sizes}")
    n = len(sizes)
    after = 0  # total size of the segments newer than i
    start = None
    for i in range(n - 1, -1, -1):
        if i < n - 1 and sizes[i] <= ratio * after:
            start = i  # keep looking for an older one: the longest run wins
        after += sizes[i]
    return None if start is None else (start, n)
