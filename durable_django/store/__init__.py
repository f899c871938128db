"""Every change of state, named by intent: the catalogue of the engine's writes.

Nothing else in the package writes a run, a step result or a group. Each function is one
transaction (or one statement that is its own) and says who won: a conditional ``UPDATE`` whose
row count decides (on a run's ``version``, on a row's ``status`` or ``lease_owner``), so that of
two workers, sweepers or operators racing for the same change exactly one makes it. A run's
``version`` is bumped here and nowhere else; a function that moved a run leaves the new version
on the ``WorkflowRun`` it was given. Jobs handed to a function are sent once its transaction
commits (:func:`durable_django.dispatch.submit`).

- :mod:`.runs`: create, claim, :func:`transition` (every move of a run), fail, release, reopen,
  cancel (and :func:`may_start`, asked before every start), take over a child, and the deadlines
  of waiting runs;
- :mod:`.groups`: open a group with its branch rows (a first batch claimed by the opening job),
  :func:`count_finals`, the join's lease, close a group (also in the transaction that recorded the
  deciding results), give back claimed branches, reopen a group;
- :mod:`.branches`: claim a batch or one attempt, record a batch or one result, the next attempt
  of a branch, and the deadlines of waiting branches;
- :mod:`.waits`: a run or branches suspended on a wait, a wait resolved once, buffered events;
- :mod:`.timers`: a delayed run started once, the delayed runs due and the runs past their deadline;
- :mod:`.compensations`: a compensating run claimed, each compensation attempt, its retry and end,
  and a compensating run taken over;
- :mod:`.schedules`: a schedule's fire claimed with the runs it starts, declared rows synced, switches;
- :mod:`.heartbeat`: renewing the leases this process holds;
- :mod:`.notify`: what the winner of each change tells the receivers of
  :mod:`durable_django.signals`, once its transaction commits (nothing, and no query, when none
  is connected).

The hand-written statements are PostgreSQL fast paths (with a portable fallback where needed):

- :func:`transition` of a sequential step: the run's conditional ``UPDATE`` and the step's
  ``INSERT`` in one CTE, one round trip and one commit;
- :func:`open_group`: every pending branch row in one ``INSERT ... SELECT FROM unnest(...)``;
- :func:`claim_batch`: ``UPDATE ... WHERE id IN (SELECT ... FOR UPDATE SKIP LOCKED LIMIT n)``;
- :func:`record_batch`: a batch's results in one ``UPDATE ... FROM unnest(...)`` (``VALUES`` elsewhere);
- :func:`count_finals`: the group's counters, ``UPDATE ... RETURNING``: its row lock serialises
  finishing branches, so each sees the counts its own results made.
"""

from __future__ import annotations

from . import compensations, schedules, timers, waits
from .branches import (
    Decide,
    NextAttempt,
    Recorded,
    cancel_branch,
    cancel_claimed,
    claim_batch,
    claim_branch,
    hold_back_branch,
    next_attempt,
    postpone_branch,
    postpone_drain,
    record_batch,
    record_block_and_join,
    record_branch,
    retry_branch,
)
from .groups import (
    Claimed,
    Closing,
    Counts,
    Opening,
    Plan,
    claim_join,
    close_group,
    count_finals,
    fail_pending_branches,
    open_group,
    release_claimed,
    release_join,
    reopen_group,
)
from .heartbeat import heartbeat, renew_leases
from .runs import (
    cancel_run,
    claim_run,
    compensating_fields,
    create_run,
    fail_fields,
    fail_run,
    failing_fields,
    may_start,
    move_fields,
    postpone_run,
    postpone_runs,
    record_cancelled_attempt,
    release_run,
    reopen_run,
    take_over_child,
    transition,
)

__all__ = [
    "Claimed",
    "Closing",
    "Counts",
    "Decide",
    "NextAttempt",
    "Opening",
    "Plan",
    "Recorded",
    "cancel_branch",
    "cancel_claimed",
    "cancel_run",
    "claim_batch",
    "claim_branch",
    "claim_join",
    "claim_run",
    "close_group",
    "compensating_fields",
    "compensations",
    "count_finals",
    "create_run",
    "fail_fields",
    "fail_pending_branches",
    "fail_run",
    "failing_fields",
    "heartbeat",
    "hold_back_branch",
    "may_start",
    "move_fields",
    "next_attempt",
    "open_group",
    "postpone_branch",
    "postpone_drain",
    "postpone_run",
    "postpone_runs",
    "record_batch",
    "record_block_and_join",
    "record_branch",
    "record_cancelled_attempt",
    "release_claimed",
    "release_join",
    "release_run",
    "renew_leases",
    "reopen_group",
    "reopen_run",
    "retry_branch",
    "schedules",
    "take_over_child",
    "timers",
    "transition",
    "waits",
]
