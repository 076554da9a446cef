"""The S3 artifact store against a real S3 server process (moto's, on loopback): the local
store's contract (content-addressed, write-once, verified on read) over HTTP, two writers of the
same bytes, and transient 5xx answers retried (a proxy in front of the server injects them)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.integration.s3 import FaultyProxy, S3Server
from unlearning.artifacts import (
    ArtifactCorruptError,
    ArtifactNotFoundError,
    ArtifactStoreError,
    artifact_ref,
    ref_digest,
    stored_ref,
)
from unlearning.object_store import S3ArtifactStore

pytestmark = pytest.mark.integration


def test_round_trip_under_the_local_layout(s3_server: S3Server, s3_bucket: str) -> None:
    store = s3_server.store(s3_bucket, "/models/a/")
    ref = store.put(b"adapter weights")
    digest = ref_digest(ref)
    assert ref == artifact_ref(b"adapter weights")
    assert s3_server.keys(s3_bucket) == [f"models/a/{digest[:2]}/{digest}"]
    assert store.exists(ref) and store.get(ref) == b"adapter weights"
    store.delete(ref)
    store.delete(ref)  # absent: a no-op
    assert not store.exists(ref) and s3_server.keys(s3_bucket) == []
    with pytest.raises(ArtifactNotFoundError):
        store.get(ref)
    with pytest.raises(ValueError, match="not an artifact reference"):
        store.get("sha256:nothex")


def test_stored_before_lists_the_artifacts_under_the_prefix(
    s3_server: S3Server, s3_bucket: str
) -> None:
    """What the sweep of unrecorded files reads: every artifact of the store's prefix written
    before the cutoff, nothing of another prefix, nothing newer."""
    store = s3_server.store(s3_bucket, "models/a")
    other = s3_server.store(s3_bucket, "models/b")
    refs = {store.put(f"weights {i}".encode()) for i in range(3)}
    other.put(b"another store's weights")
    later = datetime.now(UTC) + timedelta(minutes=5)
    assert set(store.stored_before(later)) == refs
    assert list(store.stored_before(later - timedelta(minutes=30))) == []
    assert store.delete_partial(later) == 0


def test_put_twice_is_one_object_written_once(s3_server: S3Server, s3_bucket: str) -> None:
    with FaultyProxy(s3_server.endpoint_url) as proxy:
        store = s3_server.store(s3_bucket, endpoint_url=proxy.endpoint_url)
        data = os.urandom(10_000)
        assert store.put(data) == store.put(data) == artifact_ref(data)
        assert proxy.count("PUT", ref_digest(artifact_ref(data))) == 1  # the second one asked
    assert len(s3_server.keys(s3_bucket)) == 1


def test_a_put_never_replaces_an_object(
    s3_server: S3Server, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The write is conditional: when another writer stored the key between this writer's
    check and its write (here: the check is made to miss it), the object is left as it is."""
    store = s3_server.store(s3_bucket)
    data, other = b"the bytes the key names", b"what another writer stored"
    key = store.key(artifact_ref(data))
    s3_server.client().put_object(Bucket=s3_bucket, Key=key, Body=other)
    monkeypatch.setattr(store, "exists", lambda _ref: False)
    assert store.put(data) == artifact_ref(data)
    body = s3_server.client().get_object(Bucket=s3_bucket, Key=key)["Body"].read()
    assert body == other


def test_corruption_is_detected_on_read(s3_server: S3Server, s3_bucket: str) -> None:
    store = s3_server.store(s3_bucket, "p")
    ref = store.put(b"stage 3 of sequence 1")
    s3_server.client().put_object(Bucket=s3_bucket, Key=store.key(ref), Body=b"swapped")
    with pytest.raises(ArtifactCorruptError) as caught:
        store.get(ref)
    assert (caught.value.ref, caught.value.actual) == (ref, artifact_ref(b"swapped"))
    assert stored_ref(store, ref) == artifact_ref(b"swapped")
    assert store.exists(ref)


def test_threads_writing_the_same_bytes_at_once(s3_server: S3Server, s3_bucket: str) -> None:
    store = s3_server.store(s3_bucket)
    data = os.urandom(4 * 1024 * 1024)
    start = threading.Barrier(8)
    refs: list[str] = []
    errors: list[BaseException] = []

    def write() -> None:
        start.wait()
        try:
            refs.append(store.put(data))
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=write) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == [] and refs == [artifact_ref(data)] * 8
    assert len(s3_server.keys(s3_bucket)) == 1 and store.get(refs[0]) == data


WRITER = """
import sys
from pathlib import Path
from unlearning.object_store import S3ArtifactStore
data = Path(sys.argv[1]).read_bytes()
store = S3ArtifactStore(sys.argv[2], endpoint_url=sys.argv[3])
Path(sys.argv[4]).touch()
while not Path(sys.argv[5]).exists():
    pass
print(store.put(data))
"""


def test_two_processes_writing_the_same_bytes_at_once(
    s3_server: S3Server, s3_bucket: str, tmp_path: Path
) -> None:
    data = os.urandom(8 * 1024 * 1024)
    (tmp_path / "data").write_bytes(data)
    go = tmp_path / "go"
    args = [sys.executable, "-c", WRITER, str(tmp_path / "data"), s3_bucket, s3_server.endpoint_url]
    writers = [
        subprocess.Popen(
            [*args, str(tmp_path / f"ready{i}"), str(go)],
            env={**os.environ, **s3_server.credentials()},
            cwd=Path(__file__).resolve().parents[2],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    try:
        for i, writer in enumerate(writers):
            while not (tmp_path / f"ready{i}").exists():
                assert writer.poll() is None, writer.communicate()
        # Both have built their client: they put together. (moto now and then answers a 500 to
        # one of two conditional writes racing on a key; the retry then gets the 412.)
        go.touch()
        outputs = [writer.communicate(timeout=120) for writer in writers]
    finally:
        for writer in writers:
            writer.kill()
    assert [(w.returncode, out.strip()) for w, (out, _) in zip(writers, outputs, strict=True)] == [
        (0, artifact_ref(data))
    ] * 2, outputs
    store = s3_server.store(s3_bucket)
    assert len(s3_server.keys(s3_bucket)) == 1 and store.get(artifact_ref(data)) == data


def _call(store: S3ArtifactStore, method: str, data: bytes) -> object:
    """The store's call that sends a ``method`` request for ``data``'s object."""
    ref = artifact_ref(data)
    calls = {"PUT": lambda: store.put(data), "GET": lambda: store.get(ref)}
    return calls.get(method, lambda: store.exists(ref))()


@pytest.mark.parametrize(
    ("method", "status", "answer"),
    [("PUT", 503, "ref"), ("GET", 500, "data"), ("HEAD", 503, True), ("HEAD", 500, True)],
)
def test_a_5xx_on_the_first_try_is_retried(
    s3_server: S3Server, s3_bucket: str, method: str, status: int, answer: object
) -> None:
    data = os.urandom(100_000)
    digest = ref_digest(artifact_ref(data))
    expected = {"ref": artifact_ref(data), "data": data}.get(str(answer), answer)
    direct = s3_server.store(s3_bucket)
    for attempts, requests in ((3, 2), (1, 1)):  # retried; then, without retries, an error
        direct.delete(artifact_ref(data))
        if method != "PUT":
            direct.put(data)
        with FaultyProxy(s3_server.endpoint_url) as proxy:
            store = s3_server.store(
                s3_bucket, endpoint_url=proxy.endpoint_url, max_attempts=attempts
            )
            proxy.fail(method, digest, times=1, status=status)
            if attempts > 1:
                assert _call(store, method, data) == expected
                assert direct.get(artifact_ref(data)) == data
            else:
                with pytest.raises(ArtifactStoreError):
                    _call(store, method, data)
            assert proxy.count(method, digest) == requests, proxy.requests


def test_a_body_cut_short_is_read_again(s3_server: S3Server, s3_bucket: str) -> None:
    """botocore does not retry a body that ends early (its headers came): the store does."""
    data = os.urandom(200_000)
    ref = s3_server.store(s3_bucket).put(data)
    with FaultyProxy(s3_server.endpoint_url) as proxy:
        proxy.cut("GET", ref_digest(ref), times=1)
        assert s3_server.store(s3_bucket, endpoint_url=proxy.endpoint_url).get(ref) == data
        assert proxy.count("GET", ref_digest(ref)) == 2
        proxy.cut("GET", ref_digest(ref), times=1)
        once = s3_server.store(s3_bucket, endpoint_url=proxy.endpoint_url, max_attempts=1)
        with pytest.raises(ArtifactStoreError):
            once.get(ref)


def test_an_unreachable_store_is_a_store_error(s3_bucket: str) -> None:
    from tests.integration.services import free_port

    store = S3ArtifactStore(
        s3_bucket, endpoint_url=f"http://127.0.0.1:{free_port()}", max_attempts=2
    )
    with pytest.raises(ArtifactStoreError):
        store.get(artifact_ref(b"x"))
    with pytest.raises(ArtifactStoreError):
        store.check()
