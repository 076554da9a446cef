"""The deleted samples a deletion keeps sealed for its approximate pass or its grading
(``kept_samples``, sealed by ``service.db.sealing``)."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Sequence
from typing import Any

from service.db import sealing
from service.db.models import KeptSamples, Sample, SamplePayload
from service.db.repositories.base import Repository

Row = tuple[Sample, SamplePayload]


def _dump(rows: Sequence[Row]) -> bytes:
    """What the pass reads of each sample: its ids, where it was placed, and its payload."""
    return json.dumps(
        [
            {
                "id": sample.id,
                "external_id": sample.external_id,
                "shard_id": str(sample.shard_id),
                "slice_id": str(sample.slice_id),
                "text": payload.text,
                "image": base64.b64encode(payload.image).decode() if payload.image else None,
                "media_type": payload.media_type,
                "features": payload.features,
                "messages": payload.messages,
                "label_index": payload.label_index,
                "target": payload.target,
            }
            for sample, payload in rows
        ]
    ).encode()


def _load(data: bytes) -> list[Row]:
    """The rows back, as objects outside any session (never added to one)."""
    rows: list[Row] = []
    for item in json.loads(data):
        sample = Sample(
            id=item["id"],
            external_id=item["external_id"],
            shard_id=uuid.UUID(item["shard_id"]),
            slice_id=uuid.UUID(item["slice_id"]),
        )
        image: Any = base64.b64decode(item["image"]) if item["image"] else None
        payload = SamplePayload(
            sample_id=item["id"],
            text=item["text"],
            image=image,
            media_type=item["media_type"],
            features=item["features"],
            messages=item["messages"],
            label_index=item["label_index"],
            target=item["target"],
        )
        rows.append((sample, payload))
    return rows


def _context(request_id: uuid.UUID) -> bytes:
    return f"kept-samples:{request_id}".encode()


class KeptSamplesRepository(Repository):
    def keep(self, request_id: uuid.UUID, model_id: uuid.UUID, rows: Sequence[Row]) -> KeptSamples:
        """Seal ``rows`` for the request (the caller deletes their plaintext rows)."""
        context = _context(request_id)
        key, stored, wrapped = sealing.new_data_key(context, sealing.master_key())
        kept = KeptSamples(
            request_id=request_id,
            model_id=model_id,
            n_samples=len(rows),
            data_key=stored,
            key_wrapped=wrapped,
            sealed=sealing.seal(key, _dump(rows), context=context),
        )
        self.session.add(kept)
        self.session.flush()
        return kept

    def get(self, request_id: uuid.UUID) -> KeptSamples | None:
        return self.session.get(KeptSamples, request_id)

    def open(self, kept: KeptSamples) -> list[Row]:
        """The kept rows, unsealed, ordered by sample id."""
        context = _context(kept.request_id)
        key = sealing.data_key(kept.data_key, kept.key_wrapped, context, sealing.master_key())
        return sorted(
            _load(sealing.unseal(key, kept.sealed, context=context)), key=lambda r: r[0].id
        )

    def drop(self, request_id: uuid.UUID) -> int:
        """Delete the request's sealed samples (and their key); returns how many there were."""
        kept = self.get(request_id)
        if kept is None:
            return 0
        self.session.delete(kept)
        self.session.flush()
        return kept.n_samples
