"""Artifacts in an S3-compatible object store (AWS S3, MinIO, ...): what lets a worker on one
machine read the stages a worker on another one trained.

The contract is the local folder's (:mod:`unlearning.artifacts`): an object
``<prefix>/<2 hex>/<64 hex>`` is named by the SHA-256 of its bytes, written once, and verified
on every read.

- **Write-once, two writers.** ``put`` asks first whether the object exists (a HEAD: bytes
  already stored are not sent again), then writes with ``If-None-Match: *``, so a store with
  conditional writes (AWS S3, MinIO, moto) never replaces an object: a 412 says another writer
  got there first, and since the key names the bytes, with the same bytes. A 409 (a concurrent
  conditional write still in flight) is asked again. A store that ignores the header overwrites
  equal bytes with equal bytes: harmless.
- **Integrity.** The write sends the SHA-256 (``x-amz-checksum-sha256``), so the server refuses
  bytes damaged on the way; ``get`` hashes what it read and raises
  :class:`~unlearning.artifacts.ArtifactCorruptError` when they are not the named bytes.
- **Transient errors.** botocore's ``standard`` retry mode retries 5xx answers, throttling,
  connection errors and timeouts, up to ``max_attempts`` tries per call; a body cut off while
  being read is fetched again (botocore does not retry that). What still fails is an
  :class:`~unlearning.artifacts.ArtifactStoreError`.
- **Credentials** come from boto3's own chain (``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``,
  a profile, an instance role), never from the service's settings. They need ``s3:GetObject``,
  ``s3:PutObject``, ``s3:DeleteObject`` and ``s3:ListBucket`` (without it S3 answers 403, not
  404, for a missing object).
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from datetime import datetime
from typing import TYPE_CHECKING, NoReturn

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    IncompleteReadError,
    ResponseStreamingError,
)

from unlearning.artifacts import (
    PREFIX,
    ArtifactCorruptError,
    ArtifactNotFoundError,
    ArtifactStoreError,
    artifact_ref,
    ref_digest,
)

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

_NOT_FOUND = {"404", "NoSuchKey", "NotFound"}
_ALREADY_WRITTEN = {"412", "PreconditionFailed"}
_WRITE_IN_FLIGHT = {"409", "ConditionalRequestConflict"}
# A body cut off after the answer's headers: botocore does not retry that. (A read timeout is
# not here: botocore retried it already, and a server that stalls once stalls again.)
_BODY_ERRORS = (IncompleteReadError, ResponseStreamingError)


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def _unavailable(action: str, key: str, error: Exception) -> NoReturn:
    raise ArtifactStoreError(f"object store: {action} {key} failed: {error}") from error


class S3ArtifactStore:
    """Artifacts as objects ``<prefix>/<2 hex>/<64 hex>`` of one bucket.

    ``endpoint_url`` names an S3-compatible server (MinIO: ``http://minio:9000``); empty or None
    is AWS itself. ``max_attempts`` counts the first try. ``client`` replaces the one built from
    the other arguments (tests). The client is thread-safe; build the store after a fork.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str = "us-east-1",
        max_attempts: int = 5,
        connect_timeout_s: float = 5.0,
        read_timeout_s: float = 60.0,
        client: S3Client | None = None,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("`max_attempts` must be at least 1 (the first try counts)")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.max_attempts = max_attempts
        self.client: S3Client = client or boto3.session.Session().client(
            "s3",
            endpoint_url=endpoint_url or None,
            region_name=region,
            config=Config(
                # total_max_attempts counts the first try; botocore's `max_attempts` does not.
                retries={"mode": "standard", "total_max_attempts": max_attempts},
                connect_timeout=connect_timeout_s,
                read_timeout=read_timeout_s,
                # Path-style addressing: what MinIO and other self-hosted servers answer to.
                s3={"addressing_style": "path"} if endpoint_url else None,
            ),
        )

    def key(self, ref: str) -> str:
        digest = ref_digest(ref)
        name = f"{digest[:2]}/{digest}"
        return f"{self.prefix}/{name}" if self.prefix else name

    def put(self, data: bytes) -> str:
        ref = artifact_ref(data)
        if self.exists(ref):
            return ref
        key = self.key(ref)
        checksum = base64.b64encode(bytes.fromhex(ref_digest(ref))).decode()
        for _ in range(self.max_attempts):
            try:
                self.client.put_object(
                    Bucket=self.bucket,
                    Key=key,
                    Body=data,
                    IfNoneMatch="*",
                    ChecksumSHA256=checksum,
                )
                return ref
            except ClientError as error:
                code = _code(error)
                if code in _ALREADY_WRITTEN:
                    return ref  # another writer stored it first: the same bytes
                if code not in _WRITE_IN_FLIGHT:
                    _unavailable("put", key, error)
                if self.exists(ref):  # the concurrent write landed
                    return ref
            except BotoCoreError as error:
                _unavailable("put", key, error)
        raise ArtifactStoreError(f"object store: put {key}: concurrent writes kept conflicting")

    def get(self, ref: str) -> bytes:
        data = self._read(ref)
        actual = artifact_ref(data)
        if actual != ref:
            raise ArtifactCorruptError(ref, actual)
        return data

    def _read(self, ref: str) -> bytes:
        key = self.key(ref)
        for attempt in range(1, self.max_attempts + 1):
            try:
                return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
            except ClientError as error:
                if _code(error) in _NOT_FOUND:
                    raise ArtifactNotFoundError(ref) from None
                _unavailable("get", key, error)
            except _BODY_ERRORS as error:
                if attempt == self.max_attempts:
                    _unavailable("get", key, error)
            except BotoCoreError as error:
                _unavailable("get", key, error)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def exists(self, ref: str) -> bool:
        key = self.key(ref)
        try:
            self.client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as error:
            if _code(error) in _NOT_FOUND:
                return False
            _unavailable("head", key, error)
        except BotoCoreError as error:
            _unavailable("head", key, error)
        return True

    def delete(self, ref: str) -> None:
        """S3 answers a DELETE of a missing key with 204 too: absent is a no-op."""
        key = self.key(ref)
        try:
            self.client.delete_object(Bucket=self.bucket, Key=key)
        except (ClientError, BotoCoreError) as error:
            _unavailable("delete", key, error)

    def stored_before(self, cutoff: datetime) -> Iterator[str]:
        """Listed page by page (1,000 keys each) under the store's prefix."""
        start = f"{self.prefix}/" if self.prefix else ""
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=start
            )
            for page in pages:
                for item in page.get("Contents", []):
                    name = item["Key"].removeprefix(start)
                    head, _, digest = name.partition("/")
                    if len(head) != 2 or not digest.startswith(head):
                        continue
                    try:
                        ref = PREFIX + ref_digest(PREFIX + digest)
                    except ValueError:
                        continue  # not an artifact's name
                    if item["LastModified"] < cutoff:
                        yield ref
        except (ClientError, BotoCoreError) as error:
            _unavailable("list", start or self.bucket, error)

    def delete_partial(self, cutoff: datetime) -> int:  # noqa: ARG002 (the protocol's)
        """Nothing to do: an object appears whole or not at all (one PUT, no multipart)."""
        return 0

    def check(self) -> None:
        """Raise :class:`ArtifactStoreError` unless the bucket answers (readiness)."""
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except (ClientError, BotoCoreError) as error:
            _unavailable("head bucket", self.bucket, error)
