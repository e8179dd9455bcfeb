"""Users and their API tokens (stored only as SHA-256 hashes)."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime

from sqlalchemy import or_, select

from searchsvc.errors import AuthError, NotFoundError, SpecError
from searchsvc.store._base import StoreBase
from searchsvc.store._rows import id_in_range, token_of, user_of
from searchsvc.store.models import TokenRow, UserRow, utcnow
from searchsvc.store.types import Token, User

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

    def issue_token(self, user_name: str, *, label: str = "", expires_at: datetime | None = None) -> tuple[User, str]:
        """Create a new API token for ``user_name`` (creating the user if needed).

        Returns the user and the plaintext token, which is shown once and never stored.
        """
        user = self.get_or_create_user(user_name)
        _, token = self.create_token(user.id, label=label, expires_at=expires_at)
        return user, token

    def create_token(self, user_id: int, *, label: str = "", expires_at: datetime | None = None) -> tuple[Token, str]:
        """A new token for an existing user: its record and the plaintext (shown once).
        Raises SpecError for a label over 100 characters."""
        if len(label) > 100 or "\x00" in label:
            raise SpecError([("label", "must be at most 100 characters, without NUL")])
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        with self._scope() as session:
            row = TokenRow(user_id=user_id, token_hash=hash_token(token), label=label, expires_at=expires_at)
            session.add(row)
            session.flush()
            return token_of(row), token

    def list_tokens(self, user_id: int) -> list[Token]:
        """The user's tokens, oldest first, expired ones included (until revoked)."""
        with self._scope() as session:
            rows = session.scalars(select(TokenRow).where(TokenRow.user_id == user_id).order_by(TokenRow.id))
            return [token_of(row) for row in rows]

    def revoke_token(self, user_id: int, token_id: int) -> None:
        """Delete one of the user's tokens. Raises NotFoundError if it is not theirs."""
        with self._scope() as session:
            row = session.get(TokenRow, token_id) if id_in_range(token_id) else None
            if row is None or row.user_id != user_id:
                raise NotFoundError(f"token {token_id} not found")
            session.delete(row)

    def authenticate(self, token: str | None) -> User:
        """Raises AuthError when the token is missing or matches no user."""
        if not token:
            raise AuthError("missing bearer token")
        with self._scope() as session:
            row = session.scalar(
                select(UserRow).join(TokenRow, TokenRow.user_id == UserRow.id).where(
                    TokenRow.token_hash == hash_token(token),
                    or_(TokenRow.expires_at.is_(None), TokenRow.expires_at > utcnow()),
                )
            )
            if row is None:
                raise AuthError("invalid or expired token")
            return user_of(row)
