"""Keyed identifier hashes over HTTP, on SQLite and PostgreSQL: the certificate's hashes are
HMAC-SHA-256 under the tenant's secret (two tenants, two hashes), the audit log holds no plain
hash, and `POST /deletions/{id}/verify` answers for the owning tenant only."""

from __future__ import annotations

import hashlib
import logging
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from service.db.hashing import keyed_hash, plain_hash
from service.db.models import Sample, TenantSecret
from service.db.repositories import TenantRepository
from tests.integration.api import TINY_MODEL, Api, problem, samples

pytestmark = pytest.mark.integration
SUBJECT = "alice@example.com"


@pytest.fixture
def other(client: TestClient, keys: dict[str, str]) -> Api:
    return Api(client, keys["b"])


def _secret(db: sessionmaker[Session], tenant: str) -> bytes:
    with db() as session:
        tenant_id = TenantRepository.from_session(session).by_name(tenant).id
        return TenantRepository.from_session(session).hasher(tenant_id).secret


def _model(api: Api) -> str:
    model_id: str = api.ok(api.post("/models", TINY_MODEL), 201)["id"]
    rows = samples(6, subjects={1: SUBJECT, 2: SUBJECT})
    api.ok(api.post(f"/models/{model_id}/samples", {"samples": rows}))
    return model_id


def _verify(api: Api, deletion_id: str, **identifier: str) -> Any:
    return api.post(f"/deletions/{deletion_id}/verify", identifier)


def test_certificate_hashes_are_keyed_by_the_tenant(
    api: Api, other: Api, db: sessionmaker[Session]
) -> None:
    mine = api.ok(api.delete(_model(api), sample_ids=["s003", "s004"]), 202)
    theirs = api.ok(other.delete(_model(other), sample_ids=["s003", "s004"]), 202)
    cert = api.ok(api.get(f"/deletions/{mine['id']}/certificate"))
    their_cert = other.ok(other.get(f"/deletions/{theirs['id']}/certificate"))

    secret = _secret(db, "a")
    assert cert["hash_scheme"] == "hmac-sha256"
    assert cert["sample_id_hashes"] == sorted(keyed_hash(secret, e) for e in ("s003", "s004"))
    assert plain_hash("s003") not in cert["sample_id_hashes"]
    assert set(cert["sample_id_hashes"]).isdisjoint(their_cert["sample_id_hashes"])
    with db() as session:
        names = set(session.scalars(sa.select(Sample.external_id).where(Sample.deleted)))
    assert "deleted:" + keyed_hash(secret, "s003") in names
    assert "deleted:" + plain_hash("s003") not in names


def test_a_subject_and_the_audit_log(api: Api, db: sessionmaker[Session]) -> None:
    model_id = _model(api)
    deletion = api.ok(api.delete(model_id, subject_id=SUBJECT), 202)
    cert = api.ok(api.get(f"/deletions/{deletion['id']}/certificate"))
    secret = _secret(db, "a")
    assert cert["subject_hash"] == keyed_hash(secret, SUBJECT) != plain_hash(SUBJECT)

    audit = api.ok(api.get(f"/models/{model_id}/audit"))
    text = str(audit)
    ids = ("s001", "s002", SUBJECT)
    for value in ids:
        assert value not in text and plain_hash(value) not in text
    old_digest = hashlib.sha256("\n".join(sorted(map(plain_hash, ids[:2]))).encode()).hexdigest()
    assert old_digest not in text
    entry = next(e for e in audit["entries"] if e["action"] == "deletion.deactivated")
    keyed = "\n".join(sorted(keyed_hash(secret, e) for e in ids[:2]))
    assert entry["payload"]["ids_digest"] == hashlib.sha256(keyed.encode()).hexdigest()
    assert entry["payload"]["hash_scheme"] == "hmac-sha256"


def test_verify_a_deletion(
    api: Api, other: Api, db: sessionmaker[Session], caplog: pytest.LogCaptureFixture
) -> None:
    model_id = _model(api)
    by_ids = api.ok(api.delete(model_id, sample_ids=["s003", "nope"]), 202)["id"]
    by_subject = api.ok(api.delete(model_id, subject_id=SUBJECT), 202)["id"]
    caplog.set_level(logging.DEBUG)

    answer = api.ok(_verify(api, by_ids, sample_id="s003"))
    assert answer == {"deletion_id": by_ids, "included": True, "scheme": "hmac-sha256"}
    for deletion_id, identifier, included in [
        (by_ids, {"sample_id": "nope"}, True),  # named, though it matched no sample
        (by_ids, {"sample_id": "s001"}, False),
        (by_ids, {"subject_id": SUBJECT}, False),
        (by_subject, {"subject_id": SUBJECT}, True),
        (by_subject, {"sample_id": "s001"}, True),  # one of the subject's samples
        (by_subject, {"subject_id": "bob@example.com"}, False),
        (by_subject, {"sample_id": "s003"}, False),
    ]:
        assert api.ok(_verify(api, deletion_id, **identifier))["included"] is included

    problem(_verify(other, by_ids, sample_id="s003"), 404)  # another tenant's deletion
    problem(_verify(api, "00000000-0000-0000-0000-000000000000", sample_id="s003"), 404)
    secret = _secret(db, "a")
    logged = caplog.text
    assert SUBJECT not in logged and "s003" not in logged
    assert secret.hex() not in logged and keyed_hash(secret, "s003") not in logged


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"sample_id": "s001", "subject_id": SUBJECT},
        {"sample_id": None, "subject_id": None},
        {"sample_id": ""},
        {"subject_id": "x" * 256},
        {"sample_id": 7},
        {"sample_id": "s001", "extra": 1},
        ["s001"],
    ],
)
def test_verify_refuses_a_bad_body(api: Api, body: Any) -> None:
    deletion_id = api.ok(api.delete(_model(api), sample_ids=["s001"]), 202)["id"]
    refused = problem(api.post(f"/deletions/{deletion_id}/verify", body), 422)
    assert refused["errors"]
    if body in ({}, {"sample_id": "s001", "subject_id": SUBJECT}):
        assert "exactly one of `sample_id` and `subject_id`" in str(refused["errors"])


def test_no_api_shows_a_secret(api: Api, client: TestClient, db: sessionmaker[Session]) -> None:
    deletion = api.ok(api.delete(_model(api), sample_ids=["s001"]), 202)
    schema = client.get("/openapi.json").json()
    verify = schema["paths"]["/deletions/{deletion_id}/verify"]["post"]
    assert verify["summary"] and "HMAC-SHA-256" in verify["description"]
    assert verify["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/DeletionVerification"
    )
    assert {"401", "404", "422"} <= set(verify["responses"])
    assert "identifier_secret" not in str(schema)
    with db() as session:
        secrets = [s.identifier_secret for s in session.scalars(sa.select(TenantSecret))]
    seen = "".join(
        str(api.get(url).json())
        for url in (
            f"/deletions/{deletion['id']}",
            f"/deletions/{deletion['id']}/certificate",
            f"/models/{deletion['model_id']}/audit",
            "/deletions",
        )
    )
    assert secrets and all(s.hex() not in seen for s in secrets)
