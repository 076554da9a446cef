"""Repository base: a repository wraps one session, flushes when it needs ids, never commits."""

from __future__ import annotations

import hashlib
from typing import Self

from sqlalchemy.orm import Session


class Repository:
    def __init__(self, session: Session) -> None:
        self.session = session

    @classmethod
    def from_session(cls, session: Session) -> Self:
        return cls(session)

    @property
    def dialect(self) -> str:
        return self.session.get_bind().dialect.name


def sha256_hex(value: str) -> str:
    """The hash under which an identifier is kept once its sample is deleted."""
    return hashlib.sha256(value.encode()).hexdigest()
