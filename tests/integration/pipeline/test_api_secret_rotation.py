"""Rotating a tenant's identifier secret, over HTTP, on SQLite and PostgreSQL: new deletions
hash with the new version, and what was hashed with an older one still works: its certificate
verifies, an idempotent replay finds its request, a sample or a subject deleted before is found
deleted (not unknown)."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from sqlalchemy.orm import Session, sessionmaker

from service.cli import main
from service.db.hashing import TenantHasher, keyed_hash
from service.db.models import DeletionRequest
from service.db.repositories import TenantRepository
from service.observability import logs
from service.settings import Settings, get_settings
from tests.integration.api import TINY_MODEL, Api, problem, samples

pytestmark = pytest.mark.integration
SUBJECT = "alice@example.com"
ROTATE = "/tenant/hash-secret/rotate"


def _hasher(db: sessionmaker[Session]) -> TenantHasher:
    with db() as session:
        tenant_id = TenantRepository.from_session(session).by_name("a").id
        return TenantRepository.from_session(session).hasher(tenant_id)


def _included(api: Api, deletion_id: str, **identifier: str) -> Any:
    return api.ok(api.post(f"/deletions/{deletion_id}/verify", identifier))["included"]


def test_a_rotation_keeps_what_the_old_secret_hashed_working(
    api: Api, admin: Api, db: sessionmaker[Session]
) -> None:
    model_id = api.ok(api.post("/models", TINY_MODEL), 201)["id"]
    rows = samples(8, subjects={1: SUBJECT, 2: SUBJECT})
    api.ok(api.post(f"/models/{model_id}/samples", {"samples": rows}))
    by_ids = api.ok(api.delete(model_id, "k-1", sample_ids=["s003", "nope"]), 202)
    by_subject = api.ok(api.delete(model_id, subject_id=SUBJECT), 202)
    first = _hasher(db)

    assert admin.ok(admin.post(ROTATE)) == {"version": 2}
    assert admin.ok(admin.post(ROTATE)) == {"version": 3}  # v1 is now two versions back
    problem(api.post(ROTATE), 403)  # an app key may not
    now = _hasher(db)
    assert now.version == 3 and now.secret != first.secret
    assert set(now.older) == {1, 2} and now.older[1] == first.secret

    # The old certificates verify their identifiers, and no others.
    assert _included(api, by_ids["id"], sample_id="s003") is True
    assert _included(api, by_ids["id"], sample_id="nope") is True
    assert _included(api, by_ids["id"], sample_id="s004") is False
    assert _included(api, by_subject["id"], subject_id=SUBJECT) is True
    assert _included(api, by_subject["id"], sample_id="s001") is True
    assert _included(api, by_subject["id"], subject_id="bob@example.com") is False

    # A replay of the pre-rotation request finds it; another body is still a conflict.
    replay = api.ok(api.delete(model_id, "k-1", sample_ids=["nope", "s003"]), 202)
    assert replay["id"] == by_ids["id"] and replay["counts"] == by_ids["counts"]
    problem(api.delete(model_id, "k-1", sample_ids=["s004"]), 409)

    # What was deleted before the rotation is found deleted: success, nothing changes.
    again = api.ok(api.delete(model_id, sample_ids=["s003", "s001"]), 202)
    assert again["counts"] == {"requested": 2, "deleted": 0, "already_deleted": 2, "unknown": 0}
    assert not again["partial"] and again["status"] == "completed"
    subject_again = api.ok(api.delete(model_id, subject_id=SUBJECT), 202)
    assert (subject_again["subject"], subject_again["partial"]) == ("already_deleted", False)

    # A new deletion hashes with the current version, and verifies under it.
    new = api.ok(api.delete(model_id, sample_ids=["s004"]), 202)
    cert = api.ok(api.get(f"/deletions/{new['id']}/certificate"))
    assert cert["sample_id_hashes"] == [keyed_hash(now.secret, "s004")]
    old_cert = api.ok(api.get(f"/deletions/{by_ids['id']}/certificate"))
    assert keyed_hash(first.secret, "s003") in old_cert["sample_id_hashes"]
    assert _included(api, new["id"], sample_id="s004") is True
    assert _included(api, new["id"], sample_id="s003") is False
    with db() as session:
        query = sa.select(DeletionRequest.id, DeletionRequest.secret_version)
        versions = {str(request_id): v for request_id, v in session.execute(query)}
    assert (versions[by_ids["id"]], versions[new["id"]]) == (1, 3)


def test_the_cli_rotates_and_no_answer_shows_a_secret(
    admin: Api, settings: Settings, db: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(logs, "configure", lambda *_: None)  # this process's logging stays
    monkeypatch.setenv("UNLEARN_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("UNLEARN_DATA_DIR", str(settings.data_dir))
    get_settings.cache_clear()
    first = _hasher(db)
    try:
        result = CliRunner().invoke(main, ["tenants", "rotate-secret", "a"])
        missing = CliRunner().invoke(main, ["tenants", "rotate-secret", "nobody"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "2"
    answer = admin.ok(admin.post(ROTATE))
    now = _hasher(db)
    assert answer == {"version": 3} and now.older[1] == first.secret
    text = result.output + str(answer)
    assert all(s.hex() not in text for s in (first.secret, now.older[2], now.secret))
    assert missing.exit_code != 0 and "nobody" in missing.output
