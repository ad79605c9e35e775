"""The one statement shape both stores page jobs with (``postgres_reads``,
``sqlite_reads``): newest first, keyset-paged, filtered by queue, states and function.

``states`` comes from ``rows.listing_states``. ``None`` walks the primary key backwards.
Otherwise each state is its own backwards range scan of an index ending in
``(state, id)`` (``slotfleet_jobs_state_id``, ``..._queue_state_id``,
``..._func_state_id``, migration 0004; running jobs, which those leave out, come from
the running-owner index), stopped after ``limit`` rows; the pages are merged by id and
cut again. A page of rare matches among millions of rows thus reads
about a page of index entries. The states are ``JobState`` values, a closed set written
as literals, never user text. What differs between the backends (parameter style, the
summary's column list) is passed in.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence


def state_is(state: str) -> str:
    """The condition for one state. The listing indexes leave running jobs out (they are
    few: one per busy slot, read through the running-owner index and sorted); for the
    other states the condition repeats the indexes' ``state <> 'running'``, which
    SQLite needs written out to use a partial index."""
    if state == "running":
        return "state = 'running'"
    return f"state = '{state}' AND state <> 'running'"


def listing(
    select: str,
    states: Sequence[str] | None,
    *,
    queue: bool,
    func: bool,
    after: bool,
    param: Callable[[str], str],
    running_from: str = "slotfleet_jobs",
) -> str:
    """The page of ``select`` columns; ``param(name)`` spells a named parameter
    (``%(name)s`` or ``:name``) for ``limit``, ``after_id``, ``queue`` and ``func``;
    ``running_from`` is where running jobs are read from (SQLite names the running-owner
    index: without statistics it walked the primary key instead)."""
    where = []
    if queue:
        where.append(f"queue = {param('queue')}")
    if func:
        where.append(f"func = {param('func')}")
    if after:
        where.append(f"id < {param('after_id')}")
    page = f"ORDER BY id DESC LIMIT {param('limit')}"
    if states is None:
        condition = " AND ".join(where) or "1 = 1"
        return f"SELECT {select} FROM slotfleet_jobs WHERE {condition} {page}"
    if not states:
        return f"SELECT {select} FROM slotfleet_jobs WHERE 1 = 0"
    parts = [
        f"SELECT {select} FROM {running_from if s == 'running' else 'slotfleet_jobs'} "
        f"WHERE {' AND '.join([state_is(s), *where])} {page}"
        for s in states
    ]
    if len(parts) == 1:
        return parts[0]
    union = " UNION ALL ".join(f"SELECT * FROM ({part}) AS s{i}" for i, part in enumerate(parts))
    return f"{union} {page}"
