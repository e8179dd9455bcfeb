"""Users and their API tokens (stored only as SHA-256 hashes)."""

from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import select

from searchsvc.errors import AuthError, SpecError
from searchsvc.store._base import StoreBase
from searchsvc.store._rows import user_of
from searchsvc.store.models import TokenRow, UserRow
from searchsvc.store.types import User

TOKEN_PREFIX = "ss_"


def hash_token(token: str) -> str:
    """What is stored for a token: a leaked database must not hand out working tokens."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class AccountsStore(StoreBase):
    def get_or_create_user(self, name: str) -> User:
        """Raises SpecError for an empty or over-long name."""
        name = name.strip()
        if not name or len(name) > 100:
            raise SpecError([("user", "must be 1-100 characters")])
        with self._scope() as session:
            row = session.scalar(select(UserRow).where(UserRow.name == name))
            if row is None:
                row = UserRow(name=name)
                session.add(row)
                session.flush()
            return user_of(row)

    def issue_token(self, user_name: str) -> tuple[User, str]:
        """Create a new API token for ``user_name`` (creating the user if needed).

        Returns the user and the plaintext token, which is shown once and never stored.
        """
        user = self.get_or_create_user(user_name)
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        with self._scope() as session:
            session.add(TokenRow(user_id=user.id, token_hash=hash_token(token)))
        return user, token

    def authenticate(self, token: str | None) -> User:
        """Raises AuthError when the token is missing or matches no user."""
        if not token:
            raise AuthError("missing bearer token")
        with self._scope() as session:
            row = session.scalar(
                select(UserRow).join(TokenRow, TokenRow.user_id == UserRow.id).where(TokenRow.token_hash == hash_token(token))
            )
            if row is None:
                raise AuthError("invalid token")
            return user_of(row)
