"""Runner slots are shared between users (issue 10: one user's four studies filled every
slot and another user's study waited until they were stopped). Real stored studies."""

from __future__ import annotations

from searchsvc.dispatch.fairness import next_study
from searchsvc.spec import parse_spec
from searchsvc.store import Store


def test_a_second_user_is_not_starved(store: Store, minimal_spec: dict) -> None:
    spec = parse_spec(minimal_spec)
    alice = store.get_or_create_user("alice")
    bob = store.get_or_create_user("bob")
    alice_studies = [store.create_study(alice.id, spec) for _ in range(4)]
    bob_study = store.create_study(bob.id, spec)  # submitted last
    running: dict[int, int] = {}
    pending = [*alice_studies, bob_study]
    order = []
    for _ in range(3):  # three free slots
        chosen = next_study(pending, running, max_per_user=None)
        assert chosen is not None
        order.append(chosen.id)
        pending.remove(chosen)
        running[chosen.owner_id] = running.get(chosen.owner_id, 0) + 1
    # alice's oldest first, then bob (who runs nothing), then alice again
    assert order == [alice_studies[0].id, bob_study.id, alice_studies[1].id]


def test_a_user_at_their_limit_waits_and_others_go_ahead(store: Store, minimal_spec: dict) -> None:
    spec = parse_spec(minimal_spec)
    alice = store.get_or_create_user("alice")
    bob = store.get_or_create_user("bob")
    a1, a2 = store.create_study(alice.id, spec), store.create_study(alice.id, spec)
    b1 = store.create_study(bob.id, spec)
    assert next_study([a1, a2], {alice.id: 2}, max_per_user=2) is None
    assert next_study([a1, a2, b1], {alice.id: 2}, max_per_user=2) == b1
    assert next_study([a1, b1], {}, max_per_user=2, eligible=lambda s: s.owner_id != alice.id) == b1
