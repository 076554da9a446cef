"""Typed FastAPI dependencies: settings, the database session (one transaction per request),
and :func:`end_read`, the one way a route ends its transaction early. Routes never commit."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session, sessionmaker

from service.db.engine import unit_of_work
from service.settings import Settings


def get_app_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_session(request: Request) -> Iterator[Session]:
    """The request's transaction: committed when the route returns, rolled back on error."""
    factory: sessionmaker[Session] = request.app.state.session_factory
    with unit_of_work(factory) as session:
        yield session


def end_read(session: Session) -> None:
    """End the request's transaction before a long computation (a prediction, a generation),
    so that no transaction, snapshot or pooled connection stays open while the model computes.

    It commits what the route read (a read-only route wrote nothing; a mark of
    :mod:`service.db.after_commit` is honoured as at any commit). Objects read stay usable
    (``expire_on_commit=False``); :func:`get_session` commits again when the route returns,
    which is a no-op unless the route touched the session since. The one call to ``commit``
    a route may reach: ``tests/unit/test_architecture.py`` finds any other."""
    session.commit()


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
#: ``scope="function"``: the transaction ends when the route function has returned and its
#: answer is serialized, *before* the answer is sent (the default, ``"request"``, would commit
#: after it: a client told 201 could find nothing, and a failed commit would lose what it was
#: told is stored). A commit that fails is then an error answer, never a success.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]
