"""The Python client without a service: webhook signatures checked against HMACs computed here,
and the retry, idempotency, batching and wait rules against an ``httpx.MockTransport``."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any, cast

import httpx
import pytest

from unlearn_client import (
    GENESIS_HASH,
    SIGNATURE_HEADER,
    ApiError,
    AuditEntry,
    AuthenticationError,
    ConflictError,
    NetworkError,
    NotFoundError,
    OperationFailedError,
    PermissionDeniedError,
    RateLimitedError,
    ServerError,
    UnlearnClient,
    ValidationError,
    WaitTimeout,
    WebhookSignatureError,
    entry_hash,
    verify_audit_chain,
    verify_webhook,
)

# --- verify_webhook -------------------------------------------------------------------------

SECRET = "whsec_" + "A" * 43
OLD_SECRET = "whsec_" + "B" * 43
NOW = 1_790_000_000
TENANT = "0b6f3c1e-7d2a-4a57-9e0e-3f1c2b4d5e6f"
EVENT = {
    "id": "evt_" + "0" * 31 + "1",
    "type": "deletion.completed",
    "created_at": "2026-11-28T12:00:00Z",
    "tenant_id": TENANT,
    "data": {"deletion": {"id": "d1", "model_id": "m1", "status": "completed"}},
}
BODY = json.dumps(EVENT).encode()


def hand_signed(body: bytes, secret: str, t: int) -> str:
    """The contract's formula, written out: HMAC-SHA-256(secret, "<t>." + body), hex."""
    return hmac.new(
        secret.encode("utf-8"), str(t).encode() + b"." + body, hashlib.sha256
    ).hexdigest()


def header(t: int, *signatures: str) -> str:
    return ",".join([f"t={t}", *(f"v1={s}" for s in signatures)])


def test_a_genuine_delivery_verifies_and_parses() -> None:
    event = verify_webhook(BODY, header(NOW, hand_signed(BODY, SECRET, NOW)), SECRET, now=NOW)
    assert event.id == EVENT["id"] and event.type == "deletion.completed"
    assert event.tenant_id == uuid.UUID(TENANT)
    assert event.created_at == datetime(2026, 11, 28, 12, tzinfo=UTC)
    assert event.data == EVENT["data"] and event.raw == EVENT


def test_a_vector_computed_outside_python() -> None:
    """`printf '1700000000.{"id":"evt_1"}' | openssl dgst -sha256 -hmac whsec_test`: the
    verifier agrees with openssl, not only with this file's formula."""
    body = b'{"id":"evt_1"}'
    signature = "c89214b5b5da833daed6f0b8c5bb6bd58cea9022bd80ccc78230f3942d632925"
    assert hand_signed(body, "whsec_test", 1_700_000_000) == signature
    with pytest.raises(WebhookSignatureError, match="not a webhook event"):  # but it is signed
        verify_webhook(body, f"t=1700000000,v1={signature}", "whsec_test", now=1_700_000_000)
    with pytest.raises(WebhookSignatureError, match="no signature matches"):
        verify_webhook(body, f"t=1700000000,v1={signature}", "whsec_tesT", now=1_700_000_000)


def test_a_forged_body_is_rejected() -> None:
    signed = header(NOW, hand_signed(BODY, SECRET, NOW))
    forged = BODY.replace(b'"completed"', b'"failed"')
    with pytest.raises(WebhookSignatureError, match="no signature matches"):
        verify_webhook(forged, signed, SECRET, now=NOW)


def test_a_wrong_secret_is_rejected() -> None:
    signed = header(NOW, hand_signed(BODY, SECRET, NOW))
    with pytest.raises(WebhookSignatureError, match="no signature matches"):
        verify_webhook(BODY, signed, OLD_SECRET, now=NOW)


def test_a_signature_moved_to_another_timestamp_is_rejected() -> None:
    """The timestamp is signed: a replay cannot freshen a captured signature's ``t``."""
    captured = hand_signed(BODY, SECRET, NOW - 3600)
    with pytest.raises(WebhookSignatureError, match="no signature matches"):
        verify_webhook(BODY, header(NOW, captured), SECRET, now=NOW)


@pytest.mark.parametrize("age", [301, -301, 86_400])
def test_an_old_or_future_timestamp_is_a_replay(age: int) -> None:
    t = NOW - age
    with pytest.raises(WebhookSignatureError, match="replayed"):
        verify_webhook(BODY, header(t, hand_signed(BODY, SECRET, t)), SECRET, now=NOW)


def test_within_the_tolerance_is_fresh() -> None:
    t = NOW - 300
    verify_webhook(BODY, header(t, hand_signed(BODY, SECRET, t)), SECRET, now=NOW)
    t = NOW - 30
    verify_webhook(BODY, header(t, hand_signed(BODY, SECRET, t)), SECRET, now=NOW, tolerance_s=60)
    with pytest.raises(WebhookSignatureError):
        verify_webhook(
            BODY, header(t, hand_signed(BODY, SECRET, t)), SECRET, now=NOW, tolerance_s=10
        )


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "garbage",
        "t=,v1=abc",
        "t=12x,v1=abc",
        "t=-5,v1=abc",
        f"v1={'0' * 64}",  # no timestamp
        f"t={NOW}",  # no v1
        f"t={NOW},v0={'0' * 64}",  # only a scheme we do not know
        f"t={NOW},t={NOW},v1={'0' * 64}",  # two timestamps
        f"t={NOW};v1={'0' * 64}",
    ],
)
def test_a_malformed_header_is_rejected(bad: str) -> None:
    with pytest.raises(WebhookSignatureError):
        verify_webhook(BODY, bad, SECRET, now=NOW)


def test_two_v1_values_after_a_rotation() -> None:
    """During the overlap the header carries the new and the old secret's signatures: a
    receiver holding either (or both) accepts; one holding neither does not."""
    both = header(NOW, hand_signed(BODY, SECRET, NOW), hand_signed(BODY, OLD_SECRET, NOW))
    assert verify_webhook(BODY, both, SECRET, now=NOW).id == EVENT["id"]
    assert verify_webhook(BODY, both, OLD_SECRET, now=NOW).id == EVENT["id"]
    assert verify_webhook(BODY, both, [OLD_SECRET, SECRET], now=NOW).id == EVENT["id"]
    with pytest.raises(WebhookSignatureError):
        verify_webhook(BODY, both, "whsec_other", now=NOW)
    # A receiver that switched early: two secrets against a header signed by the new one only.
    single = header(NOW, hand_signed(BODY, SECRET, NOW))
    assert verify_webhook(BODY, single, [OLD_SECRET, SECRET], now=NOW).id == EVENT["id"]


def test_unknown_schemes_beside_v1_are_ignored() -> None:
    signed = f"t={NOW},v0=deadbeef,v1={hand_signed(BODY, SECRET, NOW)}"
    assert verify_webhook(BODY, signed, SECRET, now=NOW).type == "deletion.completed"


def test_signatures_are_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)  # what webhooks.py calls
    both = header(NOW, hand_signed(BODY, OLD_SECRET, NOW), hand_signed(BODY, SECRET, NOW))
    verify_webhook(BODY, both, SECRET, now=NOW)
    assert len(compared) == 2  # every v1 against the secret, no early exit, no ==


def test_a_signed_body_that_is_not_an_event_is_rejected() -> None:
    for body in (b"not json", b"[1, 2]", json.dumps({**EVENT, "tenant_id": "x"}).encode()):
        with pytest.raises(WebhookSignatureError, match="not a webhook event"):
            verify_webhook(body, header(NOW, hand_signed(body, SECRET, NOW)), SECRET, now=NOW)


def test_no_secret_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="secret"):
        verify_webhook(BODY, header(NOW, "00"), [], now=NOW)


# --- a client on a mock transport -----------------------------------------------------------

Handler = Callable[[httpx.Request], httpx.Response]
DELETION = {"id": "d1", "model_id": "m1", "status": "deactivated"}


def problem(status: int, title: str, detail: str = "", **extra: Any) -> httpx.Response:
    body: dict[str, Any] = {"type": f"https://unlearn.dev/problems/{title.lower()}", "title": title}
    body |= {"status": status, "detail": detail, **extra}
    return httpx.Response(status, json=body, headers={"content-type": "application/problem+json"})


class Recorder:
    """A scripted service: answers each request with the next of ``answers`` (a response or an
    exception to raise), and remembers the requests."""

    def __init__(self, *answers: httpx.Response | Exception) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


@pytest.fixture
def make_client() -> Iterator[Callable[..., tuple[UnlearnClient, list[float]]]]:
    clients: list[UnlearnClient] = []

    def make(handler: Handler, **options: Any) -> tuple[UnlearnClient, list[float]]:
        client = UnlearnClient(
            "http://unlearn.test", "ul_key", transport=httpx.MockTransport(handler), **options
        )
        slept: list[float] = []
        client._sleep = slept.append
        client._random = lambda: 0.5
        clients.append(client)
        return client, slept

    yield make
    for client in clients:
        client.close()


def test_a_deletion_that_times_out_is_retried_with_the_same_idempotency_key(
    make_client: Callable[..., tuple[UnlearnClient, list[float]]],
) -> None:
    service = Recorder(
        httpx.ReadTimeout("read timed out"),
        problem(503, "Unavailable"),
        httpx.Response(202, json=DELETION, headers={"Location": "/deletions/d1"}),
    )
    client, slept = make_client(service)
    assert dict(client.delete_subject("m1", "user-07")) == DELETION
    keys = [r.headers["Idempotency-Key"] for r in service.requests]
    assert len(keys) == 3 and len(set(keys)) == 1, keys
    assert uuid.UUID(keys[0]).version == 4
    assert [r.method + " " + r.url.path for r in service.requests] == ["POST /deletions"] * 3
    assert all(json.loads(r.content) == {"model_id": "m1", "subject_id": "user-07"}
               for r in service.requests)  # fmt: skip
    assert len(slept) == 2 and slept[1] > slept[0]  # back-off grows


def test_each_deletion_call_has_its_own_key_and_a_given_key_is_used(
    make_client: Callable[..., tuple[UnlearnClient, list[float]]],
) -> None:
    service = Recorder(*(httpx.Response(202, json=DELETION) for _ in range(3)))
    client, _ = make_client(service)
    client.request_deletion("m1", sample_ids=["a", "b"])
    client.request_deletion("m1", sample_ids=["a", "b"])
    client.request_deletion("m1", sample_ids=["a"], idempotency_key="req-1")
    keys = [r.headers["Idempotency-Key"] for r in service.requests]
    assert keys[0] != keys[1] and keys[2] == "req-1"


def test_a_429_waits_retry_after(
    make_client: Callable[..., tuple[UnlearnClient, list[float]]],
) -> None:
    limited = problem(429, "Too many requests", retry_after_s=7)
    limited.headers["Retry-After"] = "7"
    service = Recorder(limited, httpx.Response(202, json=DELETION))
    client, slept = make_client(service)
    assert client.delete_subject("m1", "u")["id"] == "d1"
    assert slept == [7.0]
    assert len({r.headers["Idempotency-Key"] for r in service.requests}) == 1


def test_retry_after_as_an_http_date(
    make_client: Callable[..., tuple[UnlearnClient, list[float]]],
) -> None:
    limited = httpx.Response(
        429, headers={"Retry-After": format_datetime(datetime.now(UTC) + timedelta(seconds=30))}
    )
    client, slept = make_client(Recorder(limited, httpx.Response(200, json={"id": "m1"})))
    client.get_model("m1")
    assert len(slept) == 1 and 25 <= slept[0] <= 30


def test_a_retry_after_beyond_the_cap_is_raised_at_once(
    make_client: Callable[..., tuple[UnlearnClient, list[float]]],
) -> None:
    limited = problem(429, "Too many requests")
    limited.headers["Retry-After"] = "600"
    service = Recorder(limited)
    client, slept = make_client(service, max_retry_after=60)
    with pytest.raises(RateLimitedError) as caught:
        client.get_deletion("d1")
    assert caught.value.retry_after == 600 and slept == [] and len(service.requests) == 1


def test_a_400_is_not_retried(
    make_client: Callable[..., tuple[UnlearnClient, list[float]]],
) -> None:
    service = Recorder(problem(400, "Bad request", "no"), httpx.Response(202, json=DELETION))
    client, slept = make_client(service)
    with pytest.raises(ApiError) as caught:
        client.delete_subject("m1", "u")
    assert len(service.requests) == 1 and slept == []
    assert caught.value.status == 400 and caught.value.problem["detail"] == "no"


@pytest.mark.parametrize(
    "answer", [httpx.ReadTimeout("timed out"), problem(503, "Unavailable"), problem(429, "Slow")]
)
def test_other_posts_are_never_retried(
    make_client: Callable[..., tuple[UnlearnClient, list[float]]],
    answer: httpx.Response | Exception,
) -> None:
    """A POST without an idempotency key may have taken effect: sent once, the error raised."""
    calls: list[Callable[[UnlearnClient], object]] = [
        lambda c: c.create_model("m", labels=["a", "b"]),
        lambda c: c.train("m1"),
        lambda c: c.register_samples("m1", [{"external_id": "a", "label": "a", "text": "t"}]),
        lambda c: c.create_webhook("https://example.com/hook", ["deletion.completed"]),
        lambda c: c.rotate_webhook_secret("w1"),
        lambda c: c.redeliver_webhook_delivery("dl1"),
        lambda c: c.retry_deletion("d1"),
        lambda c: c.create_key("k"),
        lambda c: c.rotate_hash_secret(),
    ]
    for call in calls:
        service = Recorder(answer, httpx.Response(200, json={}))
        client, slept = make_client(service)
        with pytest.raises((NetworkError, ServerError, RateLimitedError)):
            call(client)
        assert len(service.requests) == 1 and slept == [], service.requests[0].url


def test_reads_are_retried_until_the_retries_run_out(
    make_client: Callable[..., tuple[UnlearnClient, list[float]]],
) -> None:
    service = Recorder(*(problem(503, "Unavailable") for _ in range(3)))
    client, slept = make_client(service, retries=2)
    with pytest.raises(ServerError) as caught:
        client.model_status("m1")
    assert len(service.requests) == 3 and len(slept) == 2
    assert caught.value.status == 503 and caught.value.title == "Unavailable"
    connect = Recorder(httpx.ConnectError("refused"), httpx.Response(200, json={"id": "m1"}))
    client, _ = make_client(connect)
    assert dict(client.get_model("m1")) == {"id": "m1"} and len(connect.requests) == 2


def test_a_transport_error_that_would_recur_is_not_retried(
    make_client: Callable[..., tuple[UnlearnClient, list[float]]],
) -> None:
    service = Recorder(httpx.UnsupportedProtocol("no such scheme"), httpx.Response(200, json={}))
    client, slept = make_client(service)
    with pytest.raises(NetworkError, match="UnsupportedProtocol"):
        client.get_model("m1")
    assert len(service.requests) == 1 and slept == []


def test_predict_and_verify_are_reads_and_retried(
    make_client: Callable[..., tuple[UnlearnClient, list[float]]],
) -> None:
    busy = problem(503, "Serving busy")
    service = Recorder(busy, httpx.Response(200, json={"predictions": []}))
    client, _ = make_client(service)
    client.predict("m1", ["a text"])
    service = Recorder(busy, httpx.Response(200, json={"included": True}))
    client, _ = make_client(service)
    assert client.verify_deletion("d1", subject_id="u")["included"]
    assert json.loads(service.requests[0].content) == {"subject_id": "u"}


def test_backoff_is_exponential_with_jitter(
    make_client: Callable[..., tuple[UnlearnClient, list[float]]],
) -> None:
    client, _ = make_client(Recorder(), backoff=1.0, max_backoff=8.0)
    client._random = lambda: 0.0
    assert [client._backoff(a) for a in range(5)] == [0.5, 1.0, 2.0, 4.0, 4.0]
    client._random = lambda: 0.999999
    assert [round(client._backoff(a)) for a in range(5)] == [1, 2, 4, 8, 8]


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (401, AuthenticationError),
        (403, PermissionDeniedError),
        (404, NotFoundError),
        (409, ConflictError),
        (422, ValidationError),
        (500, ServerError),
        (418, ApiError),
    ],
)
def test_errors_are_typed_and_carry_the_problem(
    make_client: Callable[..., tuple[UnlearnClient, list[float]]],
    status: int,
    kind: type[ApiError],
) -> None:
    answer = problem(status, "Some title", "what went wrong", errors=[{"loc": ["body"]}])
    client, _ = make_client(Recorder(answer))
    with pytest.raises(kind) as caught:
        client.create_model("m")
    error = caught.value
    assert type(error) is kind
    assert (error.status, error.title, error.detail) == (status, "Some title", "what went wrong")
    assert error.problem["errors"] == [{"loc": ["body"]}] and error.errors == [{"loc": ["body"]}]
    assert error.type.endswith("some title") and "POST" in str(error)


def test_a_forbidden_key_is_an_authentication_error(
    make_client: Callable[..., tuple[UnlearnClient, list[float]]],
) -> None:
    client, _ = make_client(Recorder(problem(403, "Forbidden")))
    with pytest.raises(AuthenticationError):
        client.list_keys()


def test_an_answer_that_is_not_a_problem_still_raises_a_typed_error(
    make_client: Callable[..., tuple[UnlearnClient, list[float]]],
) -> None:
    gateway = httpx.Response(502, text="<html>Bad Gateway</html>")
    client, _ = make_client(Recorder(gateway), retries=0)
    with pytest.raises(ServerError) as caught:
        client.get_model("m1")
    assert caught.value.problem["status"] == 502 and "Bad Gateway" in str(caught.value.detail)


def test_every_request_carries_the_key(
    make_client: Callable[..., tuple[UnlearnClient, list[float]]],
) -> None:
    service = Recorder(httpx.Response(200, json={"id": "m1"}))
    client, _ = make_client(service)
    client.get_model("m1")
    assert service.requests[0].headers["Authorization"] == "Bearer ul_key"
    assert service.requests[0].url == "http://unlearn.test/models/m1"


def test_the_context_manager_closes_the_http_client() -> None:
    with UnlearnClient("http://unlearn.test", "k", transport=httpx.MockTransport(Recorder())) as c:
        pass
    assert c._http.is_closed


# --- batched registration -------------------------------------------------------------------


def rows(n: int) -> list[dict[str, Any]]:
    return [{"external_id": f"s{i}", "label": "a", "text": f"text {i}"} for i in range(n)]


def stored_answer(request: httpx.Request, bad: set[str]) -> httpx.Response:
    batch = json.loads(request.content)["samples"]
    errors = [
        {"row": i, "external_id": r["external_id"], "type": "t", "title": "Invalid", "detail": "x"}
        for i, r in enumerate(batch)
        if r["external_id"] in bad
    ]
    balance = {"sizes": [[len(batch)]], "mean": 1.0, "unbalanced": []}
    return httpx.Response(
        200, json={"stored": len(batch) - len(errors), "errors": errors, "balance": balance}
    )


def test_samples_are_sent_in_batches_and_row_errors_keep_their_index(
    make_client: Callable[..., tuple[UnlearnClient, list[float]]],
) -> None:
    sent: list[list[dict[str, Any]]] = []

    def service(request: httpx.Request) -> httpx.Response:
        sent.append(json.loads(request.content)["samples"])
        return stored_answer(request, bad={"s3", "s12", "s24"})

    client, _ = make_client(service)
    result = client.register_samples("m1", rows(25), batch_size=10)
    assert [len(batch) for batch in sent] == [10, 10, 5]
    assert [row["external_id"] for batch in sent for row in batch] == [f"s{i}" for i in range(25)]
    assert result["stored"] == 22
    assert [(e["row"], e["external_id"]) for e in result["errors"]] == [
        (3, "s3"),
        (12, "s12"),
        (24, "s24"),
    ]
    assert result["balance"]["sizes"] == [[5]]  # the last batch's: the model after all of them


def test_image_bytes_are_sent_base64_and_predict_takes_images(
    make_client: Callable[..., tuple[UnlearnClient, list[float]]],
) -> None:
    png = b"\x89PNG\r\n\x1a\n\x00\xff raw bytes"
    sent: list[dict[str, Any]] = []

    def service(request: httpx.Request) -> httpx.Response:
        sent.append(json.loads(request.content))
        if request.url.path.endswith("/samples"):
            return stored_answer(request, bad=set())
        return httpx.Response(200, json={"predictions": []})

    client, _ = make_client(service)
    images: list[dict[str, Any]] = [
        {"external_id": "i0", "label": "a", "image": png},
        {"external_id": "i1", "label": "a", "image": base64.b64encode(png).decode()},
    ]
    assert client.register_samples("m1", images)["stored"] == 2
    assert [row["image"] for row in sent[0]["samples"]] == [base64.b64encode(png).decode()] * 2
    client.predict("m1", images=[png])
    assert sent[1] == {"images": [base64.b64encode(png).decode()]}
    client.predict("m1", ["a text"])
    assert sent[2] == {"texts": ["a text"]}
    for bad in ({}, {"texts": ["a"], "images": [png]}):
        with pytest.raises(ValueError, match="exactly one of `texts` and `images`"):
            client.predict("m1", **bad)  # type: ignore[arg-type]
    assert len(sent) == 3


def test_batches_also_stay_under_a_byte_budget(
    make_client: Callable[..., tuple[UnlearnClient, list[float]]],
) -> None:
    sent: list[int] = []

    def service(request: httpx.Request) -> httpx.Response:
        sent.append(len(request.content))
        return stored_answer(request, bad=set())

    client, _ = make_client(service)
    big = [{"external_id": f"s{i}", "label": "a", "text": "x" * 1000} for i in range(10)]
    assert client.register_samples("m1", big, max_batch_bytes=3500)["stored"] == 10
    assert len(sent) == 4 and max(sent) < 3600


def test_a_refused_batch_raises_with_what_was_stored_before(
    make_client: Callable[..., tuple[UnlearnClient, list[float]]],
) -> None:
    answers = iter([None, problem(422, "Invalid request", errors=[{"loc": ["body"]}])])

    def service(request: httpx.Request) -> httpx.Response:
        answer = next(answers)
        return answer if answer is not None else stored_answer(request, bad={"s1"})

    client, _ = make_client(service)
    with pytest.raises(ValidationError) as caught:
        client.register_samples("m1", rows(4), batch_size=2)
    assert caught.value.partial is not None
    assert caught.value.partial["stored"] == 1 and caught.value.partial["errors"][0]["row"] == 1
    assert any("row 2" in note for note in caught.value.__notes__)


# --- waits ----------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def deletion(status: str, **times: str | None) -> dict[str, Any]:
    phases = {"deactivated_at": "t0", "approximated_at": None, "retraining_at": None}
    return {"id": "d1", "status": status, "failure_reason": None, "completed_at": None,
            **phases, **times}  # fmt: skip


def waiting_client(
    make_client: Callable[..., tuple[UnlearnClient, list[float]]], *answers: dict[str, Any]
) -> tuple[UnlearnClient, Clock, Recorder]:
    service = Recorder(*(httpx.Response(200, json=a) for a in answers))
    client, _ = make_client(service)
    clock = Clock()
    client._sleep, client._clock = clock.sleep, lambda: clock.now
    return client, clock, service


def test_wait_for_deletion_backs_off_until_completed(
    make_client: Callable[..., tuple[UnlearnClient, list[float]]],
) -> None:
    answers = [deletion("retraining", retraining_at="t1")] * 5
    done = deletion("completed", retraining_at="t1", completed_at="t2")
    client, clock, service = waiting_client(make_client, *answers, done)
    assert client.wait_for_deletion("d1", interval=1.0, max_interval=3.0) == done
    assert len(service.requests) == 6
    assert clock.slept == [1.0, 1.5, 2.25, 3.0, 3.0]  # x1.5 a poll, capped (jitter 0.5: x1)


def test_wait_for_an_earlier_phase_and_for_a_skipped_one(
    make_client: Callable[..., tuple[UnlearnClient, list[float]]],
) -> None:
    client, _, _ = waiting_client(make_client, deletion("deactivated"))
    assert client.wait_for_deletion("d1", "deactivated")["status"] == "deactivated"
    done = deletion("completed", retraining_at="t1", completed_at="t2")  # never approximated
    client, _, _ = waiting_client(make_client, deletion("retraining", retraining_at="t1"), done)
    assert client.wait_for_deletion("d1", "approximated") == done
    with pytest.raises(ValueError, match="until"):
        client.wait_for_deletion("d1", "failed")  # type: ignore[arg-type]


def test_wait_for_deletion_times_out_with_the_last_state(
    make_client: Callable[..., tuple[UnlearnClient, list[float]]],
) -> None:
    stuck = deletion("retraining", retraining_at="t1")
    client, clock, _ = waiting_client(make_client, *[stuck] * 50)
    with pytest.raises(WaitTimeout) as caught:
        client.wait_for_deletion("d1", timeout=20, interval=1.0, max_interval=4.0)
    assert caught.value.last == stuck and isinstance(caught.value, TimeoutError)
    assert clock.now == pytest.approx(20.0)  # the last sleep is cut to the deadline


def test_a_failed_deletion_ends_the_wait(
    make_client: Callable[..., tuple[UnlearnClient, list[float]]],
) -> None:
    failed = deletion("failed", failure_reason="a retrain failed")
    client, _, _ = waiting_client(make_client, failed)
    with pytest.raises(OperationFailedError, match="a retrain failed") as caught:
        client.wait_for_deletion("d1")
    assert caught.value.resource == failed


def test_wait_until_ready(
    make_client: Callable[..., tuple[UnlearnClient, list[float]]],
) -> None:
    client, clock, _ = waiting_client(
        make_client, {"status": "training"}, {"status": "training"}, {"status": "ready"}
    )
    assert client.wait_until_ready("m1", interval=2.0)["status"] == "ready"
    assert clock.slept == [2.0, 3.0]
    client, _, _ = waiting_client(make_client, {"status": "failed"})
    with pytest.raises(OperationFailedError):
        client.wait_until_ready("m1")


# --- webhook management routes (the contract) -----------------------------------------------


WEBHOOK = {"id": "w1", "url": "https://example.com/hook", "events": ["deletion.completed"],
           "description": None, "created_at": "t", "secret_rotated_at": None}  # fmt: skip
DELIVERY = {"id": "dl1", "webhook_id": "w1", "state": "failed", "attempt_count": 3}


def test_webhook_methods_call_the_contracts_routes(
    make_client: Callable[..., tuple[UnlearnClient, list[float]]],
) -> None:
    service = Recorder(
        httpx.Response(201, json={**WEBHOOK, "secret": SECRET}),
        httpx.Response(200, json=[WEBHOOK]),
        httpx.Response(200, json=WEBHOOK),
        httpx.Response(201, json={**WEBHOOK, "secret": OLD_SECRET}),
        httpx.Response(200, json=[DELIVERY]),
        httpx.Response(200, json={**DELIVERY, "attempts": []}),
        httpx.Response(202, json={**DELIVERY, "state": "pending"}),
        httpx.Response(202, json={**DELIVERY, "state": "pending", "event_type": "webhook.ping"}),
        httpx.Response(204),
    )
    client, _ = make_client(service)
    created = client.create_webhook(
        "https://example.com/hook", ["deletion.completed"], description="crm"
    )
    assert created["secret"] == SECRET
    assert client.list_webhooks() == [WEBHOOK]
    assert client.get_webhook("w1") == WEBHOOK
    assert client.rotate_webhook_secret("w1")["secret"] == OLD_SECRET
    assert client.list_webhook_deliveries("w1") == [DELIVERY]
    assert client.get_webhook_delivery("dl1")["attempts"] == []
    assert client.redeliver_webhook_delivery("dl1")["state"] == "pending"
    assert client.ping_webhook("w1")["event_type"] == "webhook.ping"
    client.delete_webhook("w1")
    assert [(r.method, r.url.path) for r in service.requests] == [
        ("POST", "/webhooks"),
        ("GET", "/webhooks"),
        ("GET", "/webhooks/w1"),
        ("POST", "/webhooks/w1/rotate"),
        ("GET", "/webhooks/w1/deliveries"),
        ("GET", "/webhook-deliveries/dl1"),
        ("POST", "/webhook-deliveries/dl1/redeliver"),
        ("POST", "/webhooks/w1/ping"),
        ("DELETE", "/webhooks/w1"),
    ]
    assert json.loads(service.requests[0].content) == {
        "url": "https://example.com/hook",
        "events": ["deletion.completed"],
        "description": "crm",
    }


def test_a_retried_delete_that_finds_nothing_succeeded(
    make_client: Callable[..., tuple[UnlearnClient, list[float]]],
) -> None:
    """The first attempt deleted it, its answer was lost: the retry's 404 is the goal reached."""
    service = Recorder(httpx.ReadTimeout("lost"), problem(404, "Not found"))
    client, _ = make_client(service)
    client.delete_webhook("w1")  # no NotFoundError
    assert len(service.requests) == 2
    client, _ = make_client(Recorder(problem(404, "Not found")))
    with pytest.raises(NotFoundError):
        client.delete_webhook("w1")  # the first attempt's 404 is a 404


# --- exactness audits -----------------------------------------------------------------------


def audit(status: str, result: str | None = None, note: str | None = None) -> dict[str, Any]:
    return {"id": "a1", "model_id": "m1", "status": status, "result": result, "note": note}


def test_exactness_audit_methods_call_the_contracts_routes(
    make_client: Callable[..., tuple[UnlearnClient, list[float]]],
) -> None:
    service = Recorder(
        httpx.Response(202, json=audit("queued")),
        httpx.Response(202, json=audit("queued")),
        httpx.Response(200, json=[audit("queued")]),
        httpx.Response(200, json=audit("succeeded", "passed")),
    )
    client, _ = make_client(service)
    assert client.request_exactness_audit("m1", shards=[0, 2])["status"] == "queued"
    client.request_exactness_audit("m1")
    assert client.list_exactness_audits("m1", limit=5) == [audit("queued")]
    assert client.get_exactness_audit("m1", "a1")["result"] == "passed"
    assert [(r.method, str(r.url)) for r in service.requests] == [
        ("POST", "http://unlearn.test/models/m1/exactness-audits"),
        ("POST", "http://unlearn.test/models/m1/exactness-audits"),
        ("GET", "http://unlearn.test/models/m1/exactness-audits?limit=5"),
        ("GET", "http://unlearn.test/models/m1/exactness-audits/a1"),
    ]
    assert json.loads(service.requests[0].content) == {"shards": [0, 2]}
    assert service.requests[1].content == b""  # all shards: no body


def test_an_audit_request_is_not_retried(
    make_client: Callable[..., tuple[UnlearnClient, list[float]]],
) -> None:
    client, _ = make_client(Recorder(problem(503, "Unavailable")))
    with pytest.raises(ServerError):
        client.request_exactness_audit("m1")


def test_wait_for_an_audit_returns_its_result_even_failed(
    make_client: Callable[..., tuple[UnlearnClient, list[float]]],
) -> None:
    answers = [audit("queued"), audit("running"), audit("succeeded", "failed")]
    client, clock, service = waiting_client(make_client, *answers)
    assert client.wait_for_exactness_audit("m1", "a1", interval=1.0)["result"] == "failed"
    assert clock.slept == [1.0, 1.5] and len(service.requests) == 3


def test_a_failed_audit_job_ends_the_wait(
    make_client: Callable[..., tuple[UnlearnClient, list[float]]],
) -> None:
    client, _, _ = waiting_client(make_client, audit("failed", note="no backbone"))
    with pytest.raises(OperationFailedError, match="no backbone") as raised:
        client.wait_for_exactness_audit("m1", "a1")
    assert raised.value.resource["status"] == "failed"


# --- the audit log, checked here ------------------------------------------------------------


def chain_of(n: int, chain: str = "model:m1") -> list[dict[str, Any]]:
    """``n`` linked entries (the hash formula itself is checked against the service's real
    chain in tests/integration/test_client_audit.py)."""
    entries: list[dict[str, Any]] = []
    previous = GENESIS_HASH
    for seq in range(1, n + 1):
        at = f"2026-11-28T10:00:0{seq}.000001Z"
        entry = {"seq": seq, "at": at, "actor": "key:ab", "action": "x", "payload": {"n": seq},
                 "prev_hash": previous}  # fmt: skip
        entry["hash"] = previous = entry_hash(chain, cast(AuditEntry, entry))
        entries.append(entry)
    return entries


def check(entries: list[dict[str, Any]], **options: Any) -> tuple[bool, int | None, str | None]:
    result = verify_audit_chain("model:m1", cast(list[AuditEntry], entries), **options)
    return result.ok, result.first_bad_seq, result.reason


def test_a_whole_chain_verifies_and_reports_its_head() -> None:
    entries = chain_of(4)
    result = verify_audit_chain("model:m1", cast(list[AuditEntry], entries))
    assert (result.ok, result.entries, result.head) == (True, 4, (4, entries[-1]["hash"]))
    assert verify_audit_chain("model:m1", []).ok  # a model with no entries yet


def test_a_removed_a_reordered_and_an_edited_entry_break_it() -> None:
    entries = chain_of(4)
    assert check(entries[:1] + entries[2:]) == (False, 3, "seq 2 is missing")
    assert check([entries[0], entries[2], entries[1], entries[3]])[:2] == (False, 3)
    edited = chain_of(4)
    edited[2]["actor"] = "key:zz"
    assert check(edited) == (False, 3, "hash does not match content")
    relinked = chain_of(4)
    relinked[1]["prev_hash"] = "f" * 64
    assert check(relinked) == (False, 2, "prev_hash does not link")
    assert check(chain_of(2, chain="model:other"))[:2] == (False, 1)  # another model's chain


def test_a_pin_holds_while_the_log_only_grows() -> None:
    entries = chain_of(5)
    pinned = (3, entries[2]["hash"])
    assert check(entries, pinned=pinned) == (True, None, None)
    assert check(entries[:2], pinned=pinned) == (False, 3, "the pinned entry is gone")
    assert check(chain_of(5), pinned=(3, "0" * 63 + "1")) == (False, 3, "the pinned entry changed")


def test_audit_log_pages_are_read_to_the_end(
    make_client: Callable[..., tuple[UnlearnClient, list[float]]],
) -> None:
    entries = chain_of(3)
    verification = {"ok": True, "entries": 3, "first_bad_seq": None, "reason": None}
    pages: list[dict[str, Any]] = [
        {"chain": "model:m1", "entries": entries[:2], "next_after_seq": 2},
        {"chain": "model:m1", "entries": entries[2:], "next_after_seq": None},
    ]
    service = Recorder(*(httpx.Response(200, json={**p, "verification": verification})
                         for p in pages))  # fmt: skip
    client, _ = make_client(service)
    result = client.verify_audit_log("m1")
    assert (result.ok, result.entries) == (True, 3)
    assert [r.url.params["after_seq"] for r in service.requests] == ["0", "2"]


@pytest.mark.parametrize("digits", [20, 5000, 100_000])
def test_a_huge_timestamp_is_a_signature_error(digits: int) -> None:
    """`t=` of thousands of digits: WebhookSignatureError, never ValueError or OverflowError."""
    with pytest.raises(WebhookSignatureError):
        verify_webhook(BODY, f"t={'9' * digits},v1={'0' * 64}", SECRET, now=NOW)


def standard_headers(secret: str, t: int, msg_id: str = str(EVENT["id"])) -> dict[str, str]:
    """The Standard Webhooks headers, signed with the spec's own library."""
    import standardwebhooks

    stamp = datetime.fromtimestamp(t, tz=UTC)
    signature = standardwebhooks.Webhook(secret).sign(msg_id, stamp, BODY)
    return {"Webhook-Id": msg_id, "Webhook-Timestamp": str(t), "Webhook-Signature": signature}


STD_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def test_standard_webhooks_headers_are_verified() -> None:
    headers = standard_headers(STD_SECRET, NOW)
    assert verify_webhook(BODY, headers, STD_SECRET, now=NOW).id == EVENT["id"]
    other = "whsec_" + "C" * 32
    rotated = {
        **headers,
        "Webhook-Signature": standard_headers(other, NOW)["Webhook-Signature"]
        + " "
        + headers["Webhook-Signature"],
    }
    assert verify_webhook(BODY, rotated, [other], now=NOW).id == EVENT["id"]
    with pytest.raises(WebhookSignatureError, match="no signature matches"):
        verify_webhook(BODY, headers, other, now=NOW)
    with pytest.raises(WebhookSignatureError, match="no signature matches"):  # the id is signed
        verify_webhook(BODY, {**headers, "Webhook-Id": "evt_other"}, STD_SECRET, now=NOW)
    with pytest.raises(WebhookSignatureError, match="replayed"):
        verify_webhook(BODY, headers, STD_SECRET, now=NOW + 3600)
    with pytest.raises(WebhookSignatureError, match="not the signed"):  # a validly signed other id
        verify_webhook(BODY, standard_headers(STD_SECRET, NOW, "evt_x"), STD_SECRET, now=NOW)
    huge = {**headers, "Webhook-Timestamp": "9" * 5000}
    with pytest.raises(WebhookSignatureError, match="malformed"):
        verify_webhook(BODY, huge, STD_SECRET, now=NOW)
    with pytest.raises(WebhookSignatureError, match="no signature header"):
        verify_webhook(BODY, {"Content-Type": "application/json"}, STD_SECRET, now=NOW)
    legacy = {SIGNATURE_HEADER: header(NOW, hand_signed(BODY, SECRET, NOW))}
    assert verify_webhook(BODY, legacy, SECRET, now=NOW).id == EVENT["id"]


def test_base_models_are_listed_and_named_on_create(
    make_client: Callable[..., tuple[UnlearnClient, list[float]]],
) -> None:
    base = {"name": "deberta-v3", "family": "deberta-v2", "modality": "text", "sha256": "a" * 64}
    recorder = Recorder(
        httpx.Response(200, json={"items": [base]}),
        httpx.Response(200, json=base),
        httpx.Response(201, json={"id": "m1", "base_model": base}),
        httpx.Response(201, json={"id": "m2"}),
    )
    client, _ = make_client(recorder)
    assert [dict(b) for b in client.base_models()] == [base]
    assert dict(client.get_base_model("deberta-v3")) == base
    assert client.create_model("m", labels=["a", "b"], base_model="deberta-v3")["id"] == "m1"
    client.create_model("m", labels=["a", "b"])
    paths = [(r.method, r.url.path) for r in recorder.requests]
    assert paths == [
        ("GET", "/base-models"),
        ("GET", "/base-models/deberta-v3"),
        ("POST", "/models"),
        ("POST", "/models"),
    ]
    assert json.loads(recorder.requests[2].content)["base_model"] == "deberta-v3"
    assert "base_model" not in json.loads(recorder.requests[3].content)  # the default
