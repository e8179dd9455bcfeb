"""Which pending study gets the next runner slot, so users share the slots fairly.

First come, first served let one user's four studies fill every slot while another
user's study waited until they ended. Instead the next study is the oldest pending study
of the user who runs the fewest studies now, and a user at their own limit of running
studies is skipped (their studies wait; others' do not wait behind them).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from searchsvc.store import Study


def next_study(
    pending: Sequence[Study],
    running_by_owner: Mapping[int, int],
    *,
    max_per_user: int | None,
    eligible: Callable[[Study], bool] = lambda _study: True,
) -> Study | None:
    """The study to start next, or None.

    ``pending``: the pending studies; ``running_by_owner``: how many studies each owner
    runs now; ``max_per_user``: the most one user may run (None: no limit);
    ``eligible``: a further test (e.g. the owner's concurrent-trial limit)."""
    candidates = [
        study for study in pending
        if (max_per_user is None or running_by_owner.get(study.owner_id, 0) < max_per_user) and eligible(study)
    ]
    if not candidates:
        return None
    return min(candidates, key=lambda study: (running_by_owner.get(study.owner_id, 0), study.created_at, study.id))
