"""API keys: ``Authorization: Bearer ul_<prefix>_<secret>``, each with a tenant and a role."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from service.api.deps import SessionDep
from service.db.models import ApiKey, Role
from service.db.repositories import ApiKeyRepository
from service.errors import ForbiddenError, UnauthenticatedError


def current_key(request: Request, session: SessionDep) -> ApiKey:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise UnauthenticatedError("send an API key as `Authorization: Bearer <key>`")
    key = ApiKeyRepository.from_session(session).authenticate(token.strip())
    if key is None:
        raise UnauthenticatedError("the API key is unknown or revoked")
    return key


def admin_key(key: Annotated[ApiKey, Depends(current_key)]) -> ApiKey:
    if key.role is not Role.admin:
        raise ForbiddenError("this call needs an `admin` key")
    return key


CurrentKey = Annotated[ApiKey, Depends(current_key)]
AdminKey = Annotated[ApiKey, Depends(admin_key)]
