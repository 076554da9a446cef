"""Write-once, content-addressed storage of model artifacts (adapter weights, heads).

An artifact's reference is ``sha256:<hex digest of its bytes>``: the same bytes always get the
same name and different bytes never share one, so nothing is ever overwritten and a reference
proves the content. Backends implement :class:`ArtifactStore`; this module has the local folder,
:mod:`unlearning.object_store` an S3-compatible object store (several machines).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

PREFIX = "sha256:"


class ArtifactNotFoundError(KeyError):
    pass


class ArtifactStoreError(OSError):
    """The store could not be read or written (unreachable, refused, timed out), after the
    retries its backend makes: nothing is known about the artifact, only about the store."""


class ArtifactCorruptError(ValueError):
    """The bytes stored under a reference are not the bytes it names; ``actual`` is the
    reference of the bytes found."""

    def __init__(self, ref: str, actual: str) -> None:
        super().__init__(f"artifact {ref} does not match its content ({actual})")
        self.ref = ref
        self.actual = actual


def artifact_ref(data: bytes) -> str:
    return PREFIX + hashlib.sha256(data).hexdigest()


def ref_digest(ref: str) -> str:
    """The hex digest a reference names; ValueError when it is not a reference."""
    digest = ref.removeprefix(PREFIX)
    if (
        not ref.startswith(PREFIX)
        or len(digest) != 64
        or not all(c in "0123456789abcdef" for c in digest)
    ):
        raise ValueError(f"not an artifact reference: {ref!r}")
    return digest


class ArtifactStore(Protocol):
    def put(self, data: bytes) -> str:
        """Store ``data`` (a no-op when present) and return its reference."""
        ...

    def get(self, ref: str) -> bytes:
        """The bytes of ``ref``; raises :class:`ArtifactNotFoundError` when absent."""
        ...

    def exists(self, ref: str) -> bool: ...

    def delete(self, ref: str) -> None:
        """Remove ``ref`` (a no-op when absent)."""
        ...

    def stored_before(self, cutoff: datetime) -> Iterator[str]:
        """The references of every artifact stored before ``cutoff``, whatever names them: what
        artifact collection sweeps when no row does (a job that wrote and crashed)."""
        ...

    def delete_partial(self, cutoff: datetime) -> int:
        """Remove what writes begun before ``cutoff`` left unfinished (a crash mid-write);
        returns how many went."""
        ...


def stored_ref(store: ArtifactStore, ref: str) -> str | None:
    """The reference of the bytes ``store`` holds under ``ref`` now (``ref`` itself unless they
    were swapped or damaged), or None when it holds none: what an audit compares."""
    try:
        data = store.get(ref)
    except ArtifactNotFoundError:
        return None
    except ArtifactCorruptError as error:
        return error.actual
    return artifact_ref(data)


class LocalArtifactStore:
    """Artifacts as files ``<root>/<2 hex>/<64 hex>``, written atomically (temp file + rename).

    For one machine only: workers on other machines cannot see the folder.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def _path(self, ref: str) -> Path:
        digest = ref_digest(ref)
        return self.root / digest[:2] / digest

    def put(self, data: bytes) -> str:
        ref = artifact_ref(data)
        path = self._path(ref)
        if path.exists():
            return ref
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return ref

    def get(self, ref: str) -> bytes:
        path = self._path(ref)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise ArtifactNotFoundError(ref) from None
        actual = artifact_ref(data)
        if actual != ref:
            raise ArtifactCorruptError(ref, actual)
        return data

    def exists(self, ref: str) -> bool:
        return self._path(ref).exists()

    def delete(self, ref: str) -> None:
        self._path(ref).unlink(missing_ok=True)

    def stored_before(self, cutoff: datetime) -> Iterator[str]:
        limit = cutoff.timestamp()
        for path in sorted(self.root.glob("[0-9a-f][0-9a-f]/*")):
            if path.name.startswith(".tmp-") or not path.name.startswith(path.parent.name):
                continue
            try:
                if path.stat().st_mtime < limit:
                    yield PREFIX + ref_digest(PREFIX + path.name)
            except (FileNotFoundError, ValueError):
                continue  # deleted meanwhile, or not an artifact's name

    def delete_partial(self, cutoff: datetime) -> int:
        """The temporary files of ``put``s that never reached their rename."""
        gone = 0
        for path in self.root.glob("*/.tmp-*"):
            try:
                if datetime.fromtimestamp(path.stat().st_mtime, UTC) < cutoff:
                    path.unlink()
                    gone += 1
            except FileNotFoundError:
                continue
        return gone
