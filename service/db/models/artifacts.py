"""Artifact collection: which artifacts were deleted from the store, and when.

An artifact (adapter weights, a head, pass statistics) is deleted once no live row names it
(``service.artifacts.collection``); its row here records that, for the certificate and so that
no later pass looks at it again. A row is removed when a writer records the same bytes again
(content addressing: a retrain may produce them once more).
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from service.db.models.base import Base, utcnow


class CollectedArtifact(Base):
    __tablename__ = "collected_artifacts"

    artifact_ref: Mapped[str] = mapped_column(sa.String(500), primary_key=True)
    collected_at: Mapped[datetime] = mapped_column(default=utcnow)
