"""Repository base: a repository wraps one session, flushes when it needs ids, never commits."""

from __future__ import annotations

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
