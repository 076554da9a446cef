"""Request and response bodies of the key endpoints; a token appears once, in its 201."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    role: Literal["app", "admin"] = "app"


class KeyPublic(BaseModel):
    id: uuid.UUID
    name: str
    prefix: str
    role: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class IssuedKeyPublic(BaseModel):
    key: KeyPublic
    token: str = Field(description="`Authorization: Bearer <token>`; shown this once only.")


class SecretRotated(BaseModel):
    """The answer to a rotation of the identifier secret: its new version, never the secret."""

    version: int = Field(
        description="The version now current: new identifier hashes use it; older versions "
        "are kept, so that earlier certificates stay verifiable."
    )
