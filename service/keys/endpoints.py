"""``/keys``: a tenant's API keys, for its admin keys. Another tenant's key is a 404. And
``/tenant/hash-secret/rotate``: the tenant's other secret, that of its identifier hashes."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Response, status

from service.api.auth import AdminKey
from service.api.deps import SessionDep
from service.api.problems import problem_responses
from service.api.ratelimit import AdminWriterKey
from service.keys import service
from service.keys.schemas import IssuedKeyPublic, KeyCreate, KeyPublic, SecretRotated

router = APIRouter(prefix="/keys", tags=["keys"])
tenant_router = APIRouter(prefix="/tenant", tags=["keys"])
PROBLEMS = problem_responses(401, 403, 404, 413, 422, 429)


@router.get("", responses=PROBLEMS)
def list_keys(key: AdminKey, session: SessionDep) -> list[KeyPublic]:
    """The tenant's keys (never their secrets), oldest first."""
    return service.list_keys(session, key.tenant_id)


@router.post("", status_code=status.HTTP_201_CREATED, responses=PROBLEMS)
def issue_key(body: KeyCreate, key: AdminWriterKey, session: SessionDep) -> IssuedKeyPublic:
    """Issue a key of this tenant; its token is in this answer only."""
    return service.issue_key(session, key.tenant_id, body)


@router.post("/{key_id}/rotate", status_code=status.HTTP_201_CREATED, responses=PROBLEMS)
def rotate_key(key_id: uuid.UUID, key: AdminWriterKey, session: SessionDep) -> IssuedKeyPublic:
    """A new key with the same name and role; the old one stops working at once."""
    return service.rotate_key(session, key.tenant_id, key_id)


@router.delete("/{key_id}", status_code=status.HTTP_204_NO_CONTENT, responses=PROBLEMS)
def revoke_key(key_id: uuid.UUID, key: AdminWriterKey, session: SessionDep) -> Response:
    """Revoke a key: every later call with it is a 401."""
    service.revoke_key(session, key.tenant_id, key_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@tenant_router.post("/hash-secret/rotate", responses=problem_responses(401, 403, 429))
def rotate_hash_secret(key: AdminWriterKey, session: SessionDep) -> SecretRotated:
    """A new secret for the tenant's identifier hashes (after a suspected leak, or on a
    schedule): new deletions hash with it; the old versions are kept, never shown, so that
    earlier certificates stay verifiable and idempotent replays still match."""
    return service.rotate_hash_secret(session, key.tenant_id)
