"""A user's own API tokens: create (optionally expiring), list, revoke.

Every function acts for the authenticated user on their tokens only; another user's
token id is NotFoundError, as for studies. The plaintext of a token is returned once,
when it is created; the store keeps its hash.
"""

from __future__ import annotations

from datetime import timedelta

from searchsvc.store import Store, Token, User
from searchsvc.store.models import utcnow


class TokenService:
    def __init__(self, store: Store) -> None:
        self.store = store

    def create(self, user: User, *, label: str = "", expires_in_days: int | None = None) -> tuple[Token, str]:
        expires_at = utcnow() + timedelta(days=expires_in_days) if expires_in_days else None
        return self.store.create_token(user.id, label=label, expires_at=expires_at)

    def list(self, user: User) -> list[Token]:
        return self.store.list_tokens(user.id)

    def revoke(self, user: User, token_id: int) -> None:
        """Raises NotFoundError for an unknown token or another user's."""
        self.store.revoke_token(user.id, token_id)
