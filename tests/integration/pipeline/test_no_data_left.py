"""No data left behind: after a deletion completes, the deleted sample's text, id and subject
appear nowhere: not in any table (outbox, jobs and audit log included), not in the logs, not in
artifact names or contents, nor in the API's answers, the dashboard's pages or `/metrics`; and
no weights that learned from it are stored: every file in the artifact store is an active
layer's or a pass statistics row's, none is an artifact that saw the sample (its invalidated
layers, their chains' statistics, the approximate pass's edits of them).
Checked under the approximate policy, which keeps payloads longest.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import sqlalchemy as sa

from service.db.models import Base, Layer, LayerState, LayerStatistics, Role
from service.settings import Settings
from tests.integration.api import Api, InProcessWorker, issue_keys, samples, trained_model

pytestmark = pytest.mark.integration
TEXT = "zq-marker-text-4f1c9e"
EXTERNAL_ID = "zq-marker-id-77ab"
SUBJECT = "zq-marker-subject@example.com"
MARKERS = (TEXT, EXTERNAL_ID, SUBJECT)


def _tables(worker: InProcessWorker) -> str:
    """Every row of every table, as text."""
    out = []
    with worker.factory() as session:
        for table in Base.metadata.sorted_tables:
            for row in session.execute(sa.select(table)):
                out.append(" ".join(_text(value) for value in row))
    return "\n".join(out)


def _text(value: object) -> str:
    return value.decode("latin-1") if isinstance(value, bytes) else str(value)


def _stored(settings: Settings) -> set[str]:
    assert settings.artifacts_dir is not None
    return {f"sha256:{p.name}" for p in Path(settings.artifacts_dir).rglob("*") if p.is_file()}


def _refs(worker: InProcessWorker, *where: sa.ColumnElement[bool]) -> set[str]:
    """The artifacts of the layers matching ``where`` and of their chains' statistics."""
    with worker.factory() as session:
        layers = session.scalars(sa.select(Layer.artifact_ref).where(*where))
        statistics = session.scalars(
            sa.select(LayerStatistics.artifact_ref)
            .join(Layer, Layer.id == LayerStatistics.layer_id)
            .where(*where)
        )
        return {ref for ref in [*layers, *statistics] if ref}


def _live(worker: InProcessWorker) -> set[str]:
    with worker.factory() as session:
        layers = session.scalars(
            sa.select(Layer.artifact_ref).where(Layer.state == LayerState.active)
        )
        statistics = session.scalars(sa.select(LayerStatistics.artifact_ref))
        return {ref for ref in [*layers, *statistics] if ref}


def _artifacts(settings: Settings) -> str:
    assert settings.artifacts_dir is not None
    files = [p for p in Path(settings.artifacts_dir).rglob("*") if p.is_file()]
    assert files
    return "\n".join(f"{p.name} {p.read_bytes().decode('latin-1')}" for p in files)


def test_a_completed_deletion_leaves_no_trace(
    api: Api, worker: InProcessWorker, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    rows = samples(24)
    rows[5] = {**rows[5], "external_id": EXTERNAL_ID, "text": f"good {TEXT}", "subject_id": SUBJECT}
    model_id = trained_model(api, worker, rows, {"unlearning_policy": "approximate_then_exact"})
    assert all(marker in _tables(worker) for marker in MARKERS)  # the check can see them

    deletion = api.ok(api.post("/deletions", {"model_id": model_id, "subject_id": SUBJECT}), 202)
    saw = _refs(worker, Layer.state == LayerState.invalidated)
    assert worker.approximate() == 1
    saw |= _refs(worker, Layer.approximate.is_(True))  # edits of weights that saw it
    assert saw
    worker.drain()
    assert api.ok(api.get(f"/deletions/{deletion['id']}"))["status"] == "completed"
    for path in (
        f"/deletions/{deletion['id']}",
        f"/deletions/{deletion['id']}/certificate",
        f"/models/{model_id}/audit",
        f"/models/{model_id}/status",
    ):
        assert not any(marker in api.get(path).text for marker in MARKERS), path
    admin = Api(api.client, issue_keys(settings, Role.admin)["a"])
    for page in (
        "/dashboard",
        f"/dashboard/models/{model_id}",
        f"/dashboard/deletions/{deletion['id']}",
        *(f"/dashboard/jobs/{job}" for job in deletion["jobs"]),
        "/metrics",
    ):
        shown = admin.get(page)
        assert shown.status_code == 200, page
        assert not any(marker in shown.text for marker in MARKERS), page

    stored = _stored(settings)
    assert stored <= _live(worker), "every stored file is an active layer's or statistics"
    assert not stored & saw, "no stored artifact is one that learned from the deleted sample"

    tables, artifacts, logs = _tables(worker), _artifacts(settings), caplog.text
    for marker in MARKERS:
        assert marker not in tables
        assert marker not in artifacts
        assert marker not in logs
