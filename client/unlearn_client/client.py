"""``UnlearnClient``: the service's HTTP API as typed methods, with retries that are safe.

Retry rules. A call is retried on a connection error or timeout, a 429 (after the server's
``Retry-After``) and a 502/503/504, when repeating it cannot do anything twice: reads (GET),
DELETE, the POSTs that change nothing (predict, verify) and ``POST /deletions`` (and class
deletions), which carry an ``Idempotency-Key`` generated once per call and sent unchanged on
every retry, so the service answers a retry with the request it already accepted. Every other
POST (create a model, register samples, train, webhooks, keys) is sent once: a timeout there
may or may not have taken effect, and only the caller can tell.
"""

from __future__ import annotations

import base64
import email.utils
import json
import math
import random
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Literal, Self, TypeVar, cast
from urllib.parse import quote

import httpx

from unlearn_client.audit import ChainCheck, verify_audit_chain
from unlearn_client.errors import (
    ApiError,
    NetworkError,
    OperationFailedError,
    RateLimitedError,
    WaitTimeout,
    error_class,
)
from unlearn_client.models import (
    ApiKey,
    AuditEntry,
    AuditPage,
    AuditVerification,
    BaseModel,
    Certificate,
    Deletion,
    DeletionPage,
    DeletionVerification,
    Delivery,
    ExactnessAudit,
    GeneratedPiece,
    GenerateResponse,
    GenerationEvent,
    IssuedKey,
    Job,
    Message,
    Model,
    ModelStatus,
    PredictResponse,
    QualityReport,
    SampleIn,
    SampleRowError,
    SamplesResult,
    ScoreResponse,
    SecretRotated,
    TrainAccepted,
    Webhook,
    WebhookWithSecret,
)

__version__ = "0.1.0"

#: The statuses a retryable call is retried on: rate limited, and a proxy's or the service's
#: "temporarily unavailable" answers.
RETRY_STATUSES = frozenset({429, 502, 503, 504})
#: The service's limit of rows per ``POST /models/{id}/samples``.
MAX_SAMPLES_PER_REQUEST = 10_000
#: Bytes of JSON per samples batch: well under the service's 32 MiB body limit.
MAX_BATCH_BYTES = 16 * 1024 * 1024

#: The transport errors worth another attempt (not, e.g., an unsupported URL scheme).
_TRANSIENT = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)
_Resource = TypeVar("_Resource", bound=Mapping[str, Any])
WaitPhase = Literal["deactivated", "approximated", "retraining", "completed"]
_PHASES: tuple[str, ...] = ("deactivated", "approximated", "retraining", "completed")


class UnlearnClient:
    """A client of one service for one API key.

    ``timeout`` is per HTTP request (seconds, or an ``httpx.Timeout``); ``retries`` is how many
    times a retryable call is repeated after its first attempt (0: never); ``backoff`` the first
    retry's delay in seconds (doubled each time, up to ``max_backoff``, with jitter), unless the
    server sends ``Retry-After`` (honoured up to ``max_retry_after``; a longer wait raises the
    429 at once). ``transport`` replaces httpx's (e.g. ``httpx.MockTransport`` in tests).
    Use it as a context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float | httpx.Timeout = 30.0,
        retries: int = 3,
        backoff: float = 0.5,
        max_backoff: float = 10.0,
        max_retry_after: float = 60.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if retries < 0:
            raise ValueError("`retries` must be 0 or more")
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.max_retry_after = max_retry_after
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers={
                "Authorization": f"Bearer {api_key}",
                "User-Agent": f"unlearn-client/{__version__}",
                "Accept": "application/json, application/problem+json",
            },
            timeout=timeout,
            transport=transport,
            follow_redirects=False,
        )
        # Seams for tests (and for callers with their own clock): how the client waits and
        # tells time, and the jitter's randomness.
        self._sleep: Callable[[float], None] = time.sleep
        self._clock: Callable[[], float] = time.monotonic
        self._random: Callable[[], float] = random.random

    # --- lifecycle ---------------------------------------------------------------------------

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # --- models ------------------------------------------------------------------------------

    def base_models(self) -> list[BaseModel]:
        """The registered base models a model can fine-tune (operators register them)."""
        return cast(list[BaseModel], self._call("GET", "/base-models")["items"])

    def get_base_model(self, name: str) -> BaseModel:
        return cast(BaseModel, self._call("GET", f"/base-models/{quote(name, safe='')}"))

    def create_model(
        self,
        name: str,
        *,
        labels: Sequence[str] | None = None,
        task: Literal["classification", "regression", "causal_lm"] = "classification",
        base_model: str | None = None,
        **settings: Any,
    ) -> Model:
        """Create a model on ``base_model`` (a name of :meth:`base_models`; None: the
        deployment's default); ``settings`` are the other fields of ``POST /models``
        (``n_shards``, ``n_slices``, ``budget``, ``unlearning_policy``, ``placement``, ...)."""
        body: dict[str, Any] = {"name": name, "task": task, **settings}
        if labels is not None:
            body["labels"] = list(labels)
        if base_model is not None:
            body["base_model"] = base_model
        return cast(Model, self._call("POST", "/models", json=body))

    def get_model(self, model_id: str | uuid.UUID) -> Model:
        return cast(Model, self._call("GET", f"/models/{model_id}"))

    def model_status(self, model_id: str | uuid.UUID) -> ModelStatus:
        """Per shard: valid prefixes, the serving choice, pending retrains; quality proxy."""
        return cast(ModelStatus, self._call("GET", f"/models/{model_id}/status"))

    def model_quality(self, model_id: str | uuid.UUID, *, limit: int = 50) -> QualityReport:
        """Measured quality over time on the evaluation split, and each approximate method's
        graded passes on this model (what ``auto`` chooses from)."""
        return cast(
            QualityReport,
            self._call("GET", f"/models/{model_id}/quality", params={"limit": limit}),
        )

    def register_samples(
        self,
        model_id: str | uuid.UUID,
        samples: Iterable[SampleIn | Mapping[str, Any]],
        *,
        batch_size: int = MAX_SAMPLES_PER_REQUEST,
        max_batch_bytes: int = MAX_BATCH_BYTES,
    ) -> SamplesResult:
        """Register samples in batches of at most ``batch_size`` rows (the service takes 10,000
        per call) and ``max_batch_bytes`` of JSON.

        Returns the batches' results as one: ``stored`` summed, every refused row in ``errors``
        with ``row`` its index in ``samples`` (not in its batch), and the slice balance after
        the last batch. A batch the service refuses as a whole (a 422 for a row that breaks the
        schema) raises its :class:`ApiError`, with ``partial`` set to the result of the batches
        stored before it. Not retried (a repeated batch would report its rows as duplicates).
        """
        if not 1 <= batch_size <= MAX_SAMPLES_PER_REQUEST:
            raise ValueError(f"`batch_size` must be 1 to {MAX_SAMPLES_PER_REQUEST}")
        stored = 0
        errors: list[SampleRowError] = []
        result: SamplesResult | None = None
        for start, batch in _batches(samples, batch_size, max_batch_bytes):
            try:
                answer = cast(
                    SamplesResult,
                    self._call("POST", f"/models/{model_id}/samples", json={"samples": batch}),
                )
            except (ApiError, NetworkError) as exc:
                exc.partial = (
                    None
                    if result is None
                    else {"stored": stored, "errors": errors, "balance": result["balance"]}
                )
                exc.add_note(f"the batch starting at row {start} was refused; {stored} rows stored")
                raise
            stored += answer["stored"]
            errors += [{**e, "row": e["row"] + start} for e in answer["errors"]]
            result = answer
        if result is None:
            raise ValueError("no samples to register")
        return {"stored": stored, "errors": errors, "balance": result["balance"]}

    def train(self, model_id: str | uuid.UUID) -> TrainAccepted:
        """Start training (202); 409 while it trains or without samples. Not retried."""
        return cast(TrainAccepted, self._call("POST", f"/models/{model_id}/train"))

    def wait_until_ready(
        self,
        model_id: str | uuid.UUID,
        *,
        timeout: float = 600.0,
        interval: float = 0.5,
        max_interval: float = 10.0,
    ) -> Model:
        """Poll the model until its status is ``ready`` (polls back off from ``interval`` to
        ``max_interval``, with jitter). Raises :class:`OperationFailedError` if its training
        failed, :class:`WaitTimeout` after ``timeout`` seconds."""

        def check() -> tuple[bool, Model]:
            model = self.get_model(model_id)
            if model["status"] == "failed":
                raise OperationFailedError(f"model {model_id} failed to train", model)
            return model["status"] == "ready", model

        return self._wait(check, f"model {model_id} to be ready", timeout, interval, max_interval)

    def predict(
        self,
        model_id: str | uuid.UUID,
        texts: Sequence[str] | None = None,
        *,
        images: Sequence[bytes] | None = None,
    ) -> PredictResponse:
        """Labels and scores (or values) of the current valid ensemble (retried: a read), for
        ``texts``, or for ``images`` (PNG or JPEG bytes, sent base64-encoded) of an image
        model: exactly one of the two."""
        if (texts is None) == (images is None):
            raise ValueError("give exactly one of `texts` and `images`")
        body: dict[str, list[str]] = (
            {"texts": list(texts)}
            if texts is not None
            else {"images": [_base64(image) for image in images or ()]}
        )
        return cast(
            PredictResponse,
            self._call("POST", f"/models/{model_id}/predict", json=body, retry=True),
        )

    def generate(
        self,
        model_id: str | uuid.UUID,
        prompt: str | None = None,
        *,
        messages: Sequence[Message] | None = None,
        max_new_tokens: int = 64,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int = 0,
        stop: Sequence[str] = (),
    ) -> GenerateResponse:
        """A causal LM's response to ``prompt`` (or chat ``messages`` ending with a user
        turn): greedy at ``temperature`` 0, else seeded sampling. Retried (a read)."""
        body = _generation_body(prompt, messages, max_new_tokens, temperature, top_p, seed, stop)
        return cast(
            GenerateResponse,
            self._call("POST", f"/models/{model_id}/generate", json=body, retry=True),
        )

    def generate_stream(
        self,
        model_id: str | uuid.UUID,
        prompt: str | None = None,
        *,
        messages: Sequence[Message] | None = None,
        max_new_tokens: int = 64,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int = 0,
        stop: Sequence[str] = (),
    ) -> Iterator[GenerationEvent]:
        """The generation as it is computed: a ``token`` event per text piece, then ``done``.
        A refusal before the stream starts raises its :class:`ApiError`, as does an ``error``
        event mid-stream. Not retried (the events already read would repeat)."""
        body = _generation_body(prompt, messages, max_new_tokens, temperature, top_p, seed, stop)
        body["stream"] = True
        path = f"/models/{model_id}/generate"
        headers = {"Accept": "text/event-stream, application/problem+json"}
        try:
            with self._http.stream("POST", path, json=body, headers=headers) as response:
                if not response.is_success:
                    response.read()
                    raise _error(response)
                for name, data in _server_sent_events(response.iter_lines()):
                    if name == "token":
                        yield GenerationEvent("token", piece=cast(GeneratedPiece, data))
                    elif name == "done":
                        yield GenerationEvent("done", done=cast(GenerateResponse, data))
                    elif name == "error":
                        status = int(data.get("status", 500))
                        raise error_class(status)(
                            status, data, method="POST", url=str(response.request.url)
                        )
        except httpx.TransportError as exc:
            raise NetworkError(f"POST {path}: {type(exc).__name__}: {exc}") from exc

    def score(
        self,
        model_id: str | uuid.UUID,
        completions: Sequence[str],
        prompt: str | None = None,
        *,
        messages: Sequence[Message] | None = None,
    ) -> ScoreResponse:
        """Each completion's token log-probabilities after ``prompt`` (or ``messages``) under
        a causal LM's current valid ensemble, and their sum. Retried (a read)."""
        body: dict[str, Any] = {**_prompt_body(prompt, messages), "completions": list(completions)}
        return cast(
            ScoreResponse, self._call("POST", f"/models/{model_id}/score", json=body, retry=True)
        )

    def get_job(self, job_id: str | uuid.UUID) -> Job:
        return cast(Job, self._call("GET", f"/jobs/{job_id}"))

    # --- deletions ---------------------------------------------------------------------------

    def request_deletion(
        self,
        model_id: str | uuid.UUID,
        *,
        sample_ids: Sequence[str] | None = None,
        subject_id: str | None = None,
        method: str | None = None,
        method_config: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> Deletion:
        """Delete samples by external id, or a data subject's samples (exactly one of the two).

        Returns the 202's deletion (``deactivated``: no prediction uses a layer that saw them).
        The ``Idempotency-Key`` is ``idempotency_key`` or a fresh uuid4, the same on every retry
        of this call: a retry after a timeout or a 5xx returns the first request, never a
        second deletion. Pass your own key to make retries across processes safe too.
        """
        if (sample_ids is None) == (subject_id is None):
            raise ValueError("give exactly one of `sample_ids` and `subject_id`")
        body: dict[str, Any] = {"model_id": str(model_id)}
        if sample_ids is not None:
            body["sample_ids"] = list(sample_ids)
        else:
            body["subject_id"] = subject_id
        if method is not None:
            body["method"] = method
        if method_config is not None:
            body["method_config"] = dict(method_config)
        return self._deletion("/deletions", body, idempotency_key)

    def delete_subject(
        self,
        model_id: str | uuid.UUID,
        subject_id: str,
        *,
        method: str | None = None,
        idempotency_key: str | None = None,
    ) -> Deletion:
        """Every sample of a data subject leaves the model (see :meth:`request_deletion`)."""
        return self.request_deletion(
            model_id, subject_id=subject_id, method=method, idempotency_key=idempotency_key
        )

    def delete_class(
        self,
        model_id: str | uuid.UUID,
        label: str,
        *,
        path: Literal["exact", "approximate"] = "exact",
        method: str | None = None,
        idempotency_key: str | None = None,
    ) -> Deletion:
        """Every live sample of a class, as one deletion request (idempotent as above)."""
        body: dict[str, Any] = {"label": label, "path": path}
        if method is not None:
            body["method"] = method
        return self._deletion(f"/models/{model_id}/class-deletions", body, idempotency_key)

    def _deletion(self, path: str, body: dict[str, Any], idempotency_key: str | None) -> Deletion:
        key = idempotency_key or str(uuid.uuid4())
        headers = {"Idempotency-Key": key}
        return cast(Deletion, self._call("POST", path, json=body, headers=headers, retry=True))

    def get_deletion(self, deletion_id: str | uuid.UUID) -> Deletion:
        return cast(Deletion, self._call("GET", f"/deletions/{deletion_id}"))

    def list_deletions(
        self,
        *,
        model_id: str | uuid.UUID | None = None,
        status: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> DeletionPage:
        """One page, newest first; pass ``next_cursor`` as ``cursor`` for the next."""
        params: dict[str, Any] = {"limit": limit}
        if model_id is not None:
            params["model_id"] = str(model_id)
        if status is not None:
            params["status"] = status
        if cursor is not None:
            params["cursor"] = cursor
        return cast(DeletionPage, self._call("GET", "/deletions", params=params))

    def iter_deletions(
        self, *, model_id: str | uuid.UUID | None = None, status: str | None = None
    ) -> Iterator[Deletion]:
        """Every deletion (filtered), newest first, page after page."""
        cursor: str | None = None
        while True:
            page = self.list_deletions(model_id=model_id, status=status, limit=200, cursor=cursor)
            yield from page["items"]
            cursor = page["next_cursor"]
            if cursor is None:
                return

    def retry_deletion(self, deletion_id: str | uuid.UUID) -> Deletion:
        """Retrain a ``failed`` deletion's shards again (409 unless it failed). Not retried."""
        return cast(Deletion, self._call("POST", f"/deletions/{deletion_id}/retry"))

    def wait_for_deletion(
        self,
        deletion_id: str | uuid.UUID,
        until: WaitPhase = "completed",
        *,
        timeout: float = 600.0,
        interval: float = 0.5,
        max_interval: float = 10.0,
    ) -> Deletion:
        """Poll a deletion until it has reached ``until`` (its ``<until>_at`` time is set) or
        completed (an exact deletion skips ``approximated``). Polls back off exponentially from
        ``interval`` to ``max_interval`` with jitter. Raises :class:`OperationFailedError` when
        it fails (its ``failure_reason`` says why; :meth:`retry_deletion`), and
        :class:`WaitTimeout` after ``timeout`` seconds."""
        if until not in _PHASES:
            raise ValueError(f"`until` must be one of {', '.join(_PHASES)}")

        def check() -> tuple[bool, Deletion]:
            deletion = self.get_deletion(deletion_id)
            if deletion["status"] == "failed":
                raise OperationFailedError(
                    f"deletion {deletion_id} failed: {deletion['failure_reason']}", deletion
                )
            reached = deletion.get(f"{until}_at") is not None or deletion["status"] == "completed"
            return reached, deletion

        what = f"deletion {deletion_id} to be {until}"
        return self._wait(check, what, timeout, interval, max_interval)

    def get_certificate(self, deletion_id: str | uuid.UUID) -> Certificate:
        """What the deletion removed: counts, keyed hashes, layers and their artifacts."""
        return cast(Certificate, self._call("GET", f"/deletions/{deletion_id}/certificate"))

    def verify_deletion(
        self,
        deletion_id: str | uuid.UUID,
        *,
        sample_id: str | None = None,
        subject_id: str | None = None,
    ) -> DeletionVerification:
        """Whether a sample id or a subject id (exactly one) was part of the deletion; the id
        travels in the body and is neither stored nor logged (retried: a read)."""
        if (sample_id is None) == (subject_id is None):
            raise ValueError("give exactly one of `sample_id` and `subject_id`")
        body = {"sample_id": sample_id} if sample_id is not None else {"subject_id": subject_id}
        return cast(
            DeletionVerification,
            self._call("POST", f"/deletions/{deletion_id}/verify", json=body, retry=True),
        )

    # --- the audit log -------------------------------------------------------------------------

    def audit_log(
        self,
        model_id: str | uuid.UUID,
        *,
        after_seq: int = 0,
        limit: int = 100,
        cursor: str | None = None,
    ) -> AuditPage:
        """One page of the model's hash-chained audit log (entries after ``cursor``, a page's
        ``next_cursor``, or ``after_seq``), with the service's verification of the chain."""
        params: dict[str, Any] = {"after_seq": after_seq, "limit": limit}
        if cursor is not None:
            params["cursor"] = cursor
        return cast(AuditPage, self._call("GET", f"/models/{model_id}/audit", params=params))

    def verify_audit_log_on_service(self, model_id: str | uuid.UUID) -> AuditVerification:
        """Have the service re-hash the model's whole chain now and record the result (admin
        key); reads re-hash only what came after their checkpoint."""
        path = f"/models/{model_id}/audit/verify"
        return cast(AuditVerification, self._call("POST", path, retry=True))

    def iter_audit_log(self, model_id: str | uuid.UUID) -> Iterator[AuditEntry]:
        """Every entry of the model's audit log, oldest first, page after page."""
        for page in self._audit_pages(model_id):
            yield from page["entries"]

    def verify_audit_log(
        self, model_id: str | uuid.UUID, *, pinned: tuple[int, str] | None = None
    ) -> ChainCheck:
        """Read the whole log and recompute every link here, trusting nothing the service says
        of it (:func:`unlearn_client.verify_audit_chain`); keep the result's ``head`` and pass
        it as ``pinned`` next time to know the history before it was not rewritten."""
        pages = list(self._audit_pages(model_id))
        entries = [entry for page in pages for entry in page["entries"]]
        return verify_audit_chain(pages[0]["chain"], entries, pinned=pinned)

    def _audit_pages(self, model_id: str | uuid.UUID) -> Iterator[AuditPage]:
        page = self.audit_log(model_id, limit=500)
        yield page
        while (after_seq := page["next_after_seq"]) is not None:
            # ``next_cursor`` where the service gives one; ``after_seq`` for older services
            page = self.audit_log(
                model_id, after_seq=after_seq, cursor=page.get("next_cursor"), limit=500
            )
            yield page

    # --- exactness audits (requests need an admin key) ---------------------------------------

    def request_exactness_audit(
        self, model_id: str | uuid.UUID, *, shards: Sequence[int] | None = None
    ) -> ExactnessAudit:
        """Retrain ``shards`` (default: all) from scratch on today's live samples and compare
        each active exact layer with what is served (409 unless the model is trained). Not
        retried: each call queues an audit."""
        body = {"shards": list(shards)} if shards is not None else None
        path = f"/models/{model_id}/exactness-audits"
        return cast(ExactnessAudit, self._call("POST", path, json=body))

    def list_exactness_audits(
        self, model_id: str | uuid.UUID, *, limit: int = 20
    ) -> list[ExactnessAudit]:
        """The model's audits, newest first."""
        path = f"/models/{model_id}/exactness-audits"
        return cast(list[ExactnessAudit], self._call("GET", path, params={"limit": limit}))

    def get_exactness_audit(
        self, model_id: str | uuid.UUID, audit_id: str | uuid.UUID
    ) -> ExactnessAudit:
        """Status, result and the per-layer comparison of one audit."""
        path = f"/models/{model_id}/exactness-audits/{audit_id}"
        return cast(ExactnessAudit, self._call("GET", path))

    def wait_for_exactness_audit(
        self,
        model_id: str | uuid.UUID,
        audit_id: str | uuid.UUID,
        *,
        timeout: float = 1800.0,
        interval: float = 1.0,
        max_interval: float = 15.0,
    ) -> ExactnessAudit:
        """Poll an audit until it has a ``result`` (``passed``, ``failed`` or ``inconclusive``:
        a ``failed`` result is an answer, returned). Raises :class:`OperationFailedError` when
        its job failed (its ``note`` says why), :class:`WaitTimeout` after ``timeout``."""

        def check() -> tuple[bool, ExactnessAudit]:
            audit = self.get_exactness_audit(model_id, audit_id)
            if audit["status"] in ("failed", "cancelled"):
                message = f"exactness audit {audit_id} {audit['status']}: {audit['note']}"
                raise OperationFailedError(message, audit)
            return audit["result"] is not None, audit

        what = f"exactness audit {audit_id} to finish"
        return self._wait(check, what, timeout, interval, max_interval)

    # --- keys (admin keys) -------------------------------------------------------------------

    def list_keys(self) -> list[ApiKey]:
        return cast(list[ApiKey], self._call("GET", "/keys"))

    def create_key(self, name: str, role: Literal["app", "admin"] = "app") -> IssuedKey:
        """A new key of this tenant; its ``token`` appears in this answer only."""
        return cast(IssuedKey, self._call("POST", "/keys", json={"name": name, "role": role}))

    def rotate_key(self, key_id: str | uuid.UUID) -> IssuedKey:
        return cast(IssuedKey, self._call("POST", f"/keys/{key_id}/rotate"))

    def revoke_key(self, key_id: str | uuid.UUID) -> None:
        self._call("DELETE", f"/keys/{key_id}")

    def rotate_hash_secret(self) -> SecretRotated:
        """A new secret for the tenant's identifier hashes (admin key): new deletions hash with
        it; earlier certificates stay verifiable. Never retried (a rotation is not idempotent)."""
        return cast(SecretRotated, self._call("POST", "/tenant/hash-secret/rotate"))

    # --- webhooks (writes need an admin key) -------------------------------------------------

    def create_webhook(
        self, url: str, events: Sequence[str], *, description: str | None = None
    ) -> WebhookWithSecret:
        """Register an endpoint for ``events``; keep the returned ``secret`` (shown once) for
        :func:`unlearn_client.verify_webhook`."""
        body = {"url": url, "events": list(events), "description": description}
        return cast(WebhookWithSecret, self._call("POST", "/webhooks", json=body))

    def list_webhooks(self) -> list[Webhook]:
        return cast(list[Webhook], self._call("GET", "/webhooks"))

    def get_webhook(self, webhook_id: str | uuid.UUID) -> Webhook:
        return cast(Webhook, self._call("GET", f"/webhooks/{webhook_id}"))

    def delete_webhook(self, webhook_id: str | uuid.UUID) -> None:
        """Remove an endpoint; its pending deliveries are cancelled."""
        self._call("DELETE", f"/webhooks/{webhook_id}")

    def rotate_webhook_secret(self, webhook_id: str | uuid.UUID) -> WebhookWithSecret:
        """A new secret; the previous one keeps signing too for a while (a second ``v1=``)."""
        return cast(WebhookWithSecret, self._call("POST", f"/webhooks/{webhook_id}/rotate"))

    def ping_webhook(self, webhook_id: str | uuid.UUID) -> Delivery:
        """Send the endpoint a signed ``webhook.ping`` event (whatever it subscribed to), to test
        a receiver; follow the returned delivery. Not retried."""
        return cast(Delivery, self._call("POST", f"/webhooks/{webhook_id}/ping"))

    def list_webhook_deliveries(self, webhook_id: str | uuid.UUID) -> list[Delivery]:
        """The endpoint's deliveries, newest first."""
        return cast(list[Delivery], self._call("GET", f"/webhooks/{webhook_id}/deliveries"))

    def get_webhook_delivery(self, delivery_id: str | uuid.UUID) -> Delivery:
        """One delivery with its ``attempts``."""
        return cast(Delivery, self._call("GET", f"/webhook-deliveries/{delivery_id}"))

    def redeliver_webhook_delivery(self, delivery_id: str | uuid.UUID) -> Delivery:
        """Queue a delivery again (admin). Not retried."""
        path = f"/webhook-deliveries/{delivery_id}/redeliver"
        return cast(Delivery, self._call("POST", path))

    # --- the machinery -----------------------------------------------------------------------

    def _call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        retry: bool | None = None,
    ) -> Any:
        """Send one call, retrying it when ``retry`` (default: GET and DELETE) allows; return
        its decoded JSON (None for a 204) or raise the problem as an :class:`ApiError`."""
        retryable = method in ("GET", "DELETE") if retry is None else retry
        attempt = 0
        while True:
            try:
                response = self._http.request(
                    method, path, json=json, params=params, headers=headers
                )
            except httpx.TransportError as exc:
                transient = isinstance(exc, _TRANSIENT)
                if not (retryable and transient) or attempt >= self.retries:
                    raise NetworkError(f"{method} {path}: {type(exc).__name__}: {exc}") from exc
                self._sleep(self._backoff(attempt))
                attempt += 1
                continue
            if response.is_success:
                if response.status_code == 204 or not response.content:
                    return None
                return response.json()
            if method == "DELETE" and attempt > 0 and response.status_code == 404 and retryable:
                return None  # an earlier attempt deleted it: what the caller asked for
            if retryable and attempt < self.retries and response.status_code in RETRY_STATUSES:
                delay = self._retry_delay(response, attempt)
                if delay is not None:
                    self._sleep(delay)
                    attempt += 1
                    continue
            raise _error(response)

    def _backoff(self, attempt: int) -> float:
        """Exponential back-off with jitter: between half and all of ``backoff * 2**attempt``
        (capped), so that clients that failed together do not retry together."""
        delay = min(self.max_backoff, self.backoff * 2.0**attempt)
        return delay / 2 + self._random() * delay / 2

    def _retry_delay(self, response: httpx.Response, attempt: int) -> float | None:
        """How long to wait before retrying ``response``'s call: its ``Retry-After`` when it
        has one (None when that is beyond ``max_retry_after``: raise instead), else back-off."""
        retry_after = _retry_after(response)
        if retry_after is None:
            return self._backoff(attempt)
        if retry_after > self.max_retry_after:
            return None
        return retry_after

    def _wait(
        self,
        check: Callable[[], tuple[bool, _Resource]],
        what: str,
        timeout: float,
        interval: float,
        max_interval: float,
    ) -> _Resource:
        deadline = self._clock() + timeout
        delay = interval
        while True:
            done, last = check()
            if done:
                return last
            left = deadline - self._clock()
            if left <= 0:
                raise WaitTimeout(f"timed out after {timeout:g} s waiting for {what}", last)
            jittered = delay * (0.8 + 0.4 * self._random())
            self._sleep(min(jittered, left))
            delay = min(max_interval, delay * 1.5)


def _batches(
    samples: Iterable[SampleIn | Mapping[str, Any]], size: int, max_bytes: int
) -> Iterator[tuple[int, list[dict[str, Any]]]]:
    """``(index of the first row, rows)`` of consecutive batches of at most ``size`` rows and
    about ``max_bytes`` of JSON (a single larger row goes alone: the service judges it)."""
    batch: list[dict[str, Any]] = []
    start = 0
    used = 0
    for index, sample in enumerate(samples):
        row = dict(sample)
        if isinstance(row.get("image"), bytes | bytearray | memoryview):
            row["image"] = _base64(row["image"])
        cost = len(json.dumps(row, ensure_ascii=False).encode()) + 2
        if batch and (len(batch) >= size or used + cost > max_bytes):
            yield start, batch
            batch, start, used = [], index, 0
        batch.append(row)
        used += cost
    if batch:
        yield start, batch


def _prompt_body(prompt: str | None, messages: Sequence[Message] | None) -> dict[str, Any]:
    if (prompt is None) == (messages is None):
        raise ValueError("give exactly one of `prompt` and `messages`")
    if prompt is not None:
        return {"prompt": prompt}
    return {"messages": [dict(m) for m in messages or ()]}


def _generation_body(
    prompt: str | None,
    messages: Sequence[Message] | None,
    max_new_tokens: int,
    temperature: float,
    top_p: float,
    seed: int,
    stop: Sequence[str],
) -> dict[str, Any]:
    return {
        **_prompt_body(prompt, messages),
        "max_new_tokens": max_new_tokens,
        "temperature": temperature,
        "top_p": top_p,
        "seed": seed,
        "stop": list(stop),
    }


def _server_sent_events(lines: Iterable[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(event name, decoded data) of a ``text/event-stream`` (one ``data`` line per event, as
    the service sends them)."""
    name, data = "message", ""
    for line in lines:
        if not line:
            if data:
                yield name, json.loads(data)
            name, data = "message", ""
        elif line.startswith("event:"):
            name = line.removeprefix("event:").strip()
        elif line.startswith("data:"):
            data += line.removeprefix("data:").strip()
    if data:
        yield name, json.loads(data)


def _base64(image: bytes | bytearray | memoryview) -> str:
    """An image's bytes as the API takes them in JSON: standard base64."""
    return base64.b64encode(image).decode("ascii")


def _retry_after(response: httpx.Response) -> float | None:
    """``Retry-After`` in seconds: delta-seconds or an HTTP date (RFC 9110); None if absent or
    unreadable."""
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def _error(response: httpx.Response) -> ApiError:
    """The exception for an error answer, carrying its problem document (or, from something
    that is not the service, e.g. a proxy's HTML page, a problem made of what it sent)."""
    problem: dict[str, Any]
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and "status" in body and "title" in body:
        problem = body
    else:
        problem = {
            "type": "about:blank",
            "title": response.reason_phrase or f"HTTP {response.status_code}",
            "status": response.status_code,
            "detail": response.text[:500] or None,
        }
    status, method, url = response.status_code, response.request.method, str(response.request.url)
    headers = dict(response.headers)
    if status == 429:
        return RateLimitedError(
            status,
            problem,
            method=method,
            url=url,
            headers=headers,
            retry_after=_retry_after(response),
        )
    return error_class(status)(status, problem, method=method, url=url, headers=headers)
