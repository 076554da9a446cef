"""What the API says about a chain's verification."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field


class FullVerification(BaseModel):
    """The last full verification: every entry re-hashed from the first (an admin action or a
    housekeeping round); the only check that looks behind the checkpoint."""

    at: datetime
    through_seq: int = Field(description="The last entry it checked (the chain's end then).")
    ok: bool
    first_bad_seq: int | None
    reason: str | None


class AuditVerification(BaseModel):
    ok: bool = Field(
        description="No broken link found: not after the checkpoint by this read, not by the "
        "last full verification, not in the entries returned."
    )
    entries: int = Field(
        description="Entries known intact: the chain from its first entry through "
        "`verified_through_seq`."
    )
    first_bad_seq: int | None
    reason: str | None
    verified_through_seq: int = Field(
        0, description="The checkpoint: reads re-hash only the entries after it."
    )
    verified_at: datetime | None = None
    full_verification: FullVerification | None = Field(
        None, description="The last full verification, or null if there was none yet."
    )
