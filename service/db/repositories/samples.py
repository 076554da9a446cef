"""Samples: validated bulk registration, balanced deterministic placement and lineage look-ups."""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import InstrumentedAttribute

from service.db.hashing import TenantHasher, plain_hash
from service.db.models import Model, Sample, SamplePayload, Shard, Slice, Split, Task
from service.db.repositories.base import Repository
from service.db.repositories.models import ModelRepository
from service.errors import (
    DomainError,
    DuplicateSampleError,
    EvalSplitFullError,
    InvalidSampleError,
    WrongModalityError,
)
from service.images import ImageLimits, check_image, image_from_base64
from unlearning.families import Conversation, Modality
from unlearning.sharding import Placement, PlacementPolicy, place, place_subjects

MAX_EXTERNAL_ID_LENGTH = 255
#: A deleted sample keeps only ``deleted:<keyed hash of its external id>`` and no subject.
DELETED_PREFIX = "deleted:"
_CHUNK = 500  # bound on bound parameters per IN (...) query
#: The most live evaluation samples a model holds (``UNLEARN_EVAL_MAX_SAMPLES``'s default).
EVAL_CAP = 2_000
T = TypeVar("T")


@dataclass(frozen=True)
class NewSample:
    external_id: str
    label: str | int | float | None = None
    text: str | None = None
    features: Sequence[float] | None = None
    subject_id: str | None = None
    #: An image model's input: base64 of a PNG or JPEG (as the API takes it), or its bytes.
    image: str | bytes | None = None
    #: A causal LM's sample: an instruction pair, or chat messages as (role, content) pairs.
    prompt: str | None = None
    response: str | None = None
    messages: Sequence[tuple[str, str]] | None = None
    #: ``eval``: never placed nor trained on; served quality is measured on it.
    split: Split = Split.train


@dataclass(frozen=True)
class RowError:
    row: int
    external_id: str | None
    error: DomainError


@dataclass
class BulkResult:
    stored: list[Sample] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)


@dataclass(frozen=True)
class _Validated:
    label_index: int | None
    target: float | None
    text: str | None
    features: list[float] | None
    image: bytes | None = None
    media_type: str | None = None
    messages: list[list[str]] | None = None


#: What a causal LM's sample is made of, and what only other models' samples have.
_CONVERSATION_FIELDS = ("prompt", "response", "messages")
_OTHER_FIELDS = ("label", "text", "features", "image")


def _conversation(row: NewSample) -> list[list[str]]:
    """A causal LM's sample as stored: ``[[role, content], ...]``, checked as the engine's
    :class:`Conversation` checks it, ending with an assistant turn (what the loss covers)."""
    refused = [name for name in _OTHER_FIELDS if getattr(row, name) is not None]
    if refused:
        raise InvalidSampleError(
            f"a causal_lm model's sample is a `prompt` and its `response`, or `messages`; "
            f"`{refused[0]}` is for classification and regression models"
        )
    pair = row.prompt is not None or row.response is not None
    if pair == (row.messages is not None):
        raise InvalidSampleError("give either `prompt` and `response`, or `messages`")
    if pair:
        if row.prompt is None or row.response is None:
            raise InvalidSampleError("give both `prompt` and `response`")
        turns = [("user", row.prompt), ("assistant", row.response)]
    else:
        assert row.messages is not None
        turns = [(role, content) for role, content in row.messages]
    for index, (_role, content) in enumerate(turns):
        if not isinstance(content, str) or not content.strip():
            raise InvalidSampleError(f"message {index + 1}'s content must be a non-blank string")
        if "\x00" in content:
            raise InvalidSampleError(f"message {index + 1} must not contain NUL characters")
    try:
        conversation = Conversation(tuple(turns))
    except ValueError as error:
        raise InvalidSampleError(f"`messages`: {error}") from error
    if not conversation.ends_with_assistant:
        raise InvalidSampleError(
            "`messages` must end with an assistant turn: the response the model learns"
        )
    return [[role, content] for role, content in conversation.messages]


@dataclass(frozen=True)
class MarkedSample:
    """A sample a deletion just marked deleted, with the identifier it had."""

    id: int
    external_id: str
    shard_id: uuid.UUID | None  # None for an evaluation sample (never placed)
    slice_id: uuid.UUID | None


def deleted_external_id(external_id: str, hasher: TenantHasher) -> str:
    return DELETED_PREFIX + hasher(external_id)


def _deleted_names(external_id: str, hasher: TenantHasher) -> list[str]:
    """The names a deleted sample may carry: keyed under any version of the secret, and plain
    for a tenant's older deletions."""
    names = [DELETED_PREFIX + digest for digest in sorted(hasher.every(external_id))]
    if hasher.legacy:
        names.append(DELETED_PREFIX + plain_hash(external_id))
    return names


def _chunks(items: Sequence[T]) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


def _input(
    row: NewSample, modality: Modality, limits: ImageLimits
) -> tuple[str | None, list[float] | None, bytes | None, str | None]:
    """The row's one input, checked against what the model reads: (text, features, image,
    media type)."""
    given = [name for name in ("text", "features", "image") if getattr(row, name) is not None]
    if len(given) != 1:
        raise InvalidSampleError("give exactly one of `text`, `image` and `features`")
    if modality is Modality.IMAGE and given != ["image"]:
        raise WrongModalityError(
            f"this model's base model reads images: give `image` (base64 of a PNG or JPEG), "
            f"not `{given[0]}`"
        )
    if modality is not Modality.IMAGE and given == ["image"]:
        raise WrongModalityError("this model's base model reads texts: give `text`, not `image`")
    if row.image is not None:
        checked = (
            check_image(row.image, limits)
            if isinstance(row.image, bytes)
            else image_from_base64(row.image, limits)
        )
        return None, None, checked.data, checked.media_type
    if row.text is not None:
        if not isinstance(row.text, str) or not row.text.strip():
            raise InvalidSampleError("`text` must be a non-empty string")
        return row.text, None, None, None
    assert row.features is not None
    if isinstance(row.features, str | bytes) or not all(
        isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)
        for x in row.features
    ):
        raise InvalidSampleError("`features` must be a list of finite numbers")
    features = [float(x) for x in row.features]
    if not features:
        raise InvalidSampleError("`features` must not be empty")
    return None, features, None, None


def _validate(model: Model, row: NewSample, modality: Modality, limits: ImageLimits) -> _Validated:
    for name in ("external_id", "subject_id", "text"):
        value = getattr(row, name)
        if isinstance(value, str) and "\x00" in value:  # no database stores it in text
            raise InvalidSampleError(f"`{name}` must not contain NUL characters")
    if not isinstance(row.external_id, str) or not row.external_id.strip():
        raise InvalidSampleError("`external_id` must be a non-empty string")
    if len(row.external_id) > MAX_EXTERNAL_ID_LENGTH:
        raise InvalidSampleError(f"`external_id` is longer than {MAX_EXTERNAL_ID_LENGTH}")
    if row.external_id.startswith(DELETED_PREFIX):
        raise InvalidSampleError(f"`external_id` must not start with {DELETED_PREFIX!r}")
    if row.subject_id is not None and (
        not isinstance(row.subject_id, str) or not 0 < len(row.subject_id) <= 255
    ):
        raise InvalidSampleError("`subject_id` must be a string of 1 to 255 characters")
    if row.split not in (Split.train, Split.eval):
        raise InvalidSampleError("`split` must be `train` or `eval`")
    if model.task is Task.causal_lm:
        return _Validated(None, None, None, None, messages=_conversation(row))
    given = [name for name in _CONVERSATION_FIELDS if getattr(row, name) is not None]
    if given:
        raise InvalidSampleError(
            f"`{given[0]}` is for causal_lm models; a {model.task.value} model's sample is an "
            "input (`text`, `image` or `features`) and a `label`"
        )
    text, features, image, media_type = _input(row, modality, limits)

    label = row.label
    if label is None:
        raise InvalidSampleError(f"a {model.task.value} model's sample needs a `label`")
    if model.task is Task.classification:
        labels = model.labels or []
        if isinstance(label, str) and label in labels:
            return _Validated(labels.index(label), None, text, features, image, media_type)
        if isinstance(label, int) and not isinstance(label, bool) and 0 <= label < len(labels):
            return _Validated(label, None, text, features, image, media_type)
        raise InvalidSampleError(f"`label` must be one of {labels} (or its index), got {label!r}")
    if isinstance(label, int | float) and not isinstance(label, bool) and math.isfinite(label):
        return _Validated(None, float(label), text, features, image, media_type)
    raise InvalidSampleError(
        f"`label` of a regression model must be a finite number, got {label!r}"
    )


class SampleRepository(Repository):
    def add(
        self,
        model: Model,
        row: NewSample,
        *,
        modality: Modality = Modality.TEXT,
        limits: ImageLimits | None = None,
        eval_cap: int = EVAL_CAP,
    ) -> Sample:
        """Register one sample; raises a domain error for a duplicate or an invalid row."""
        result = self.add_many(model, [row], modality=modality, limits=limits, eval_cap=eval_cap)
        if result.errors:
            raise result.errors[0].error
        return result.stored[0]

    def add_many(
        self,
        model: Model,
        rows: Sequence[NewSample],
        *,
        modality: Modality = Modality.TEXT,
        limits: ImageLimits | None = None,
        eval_cap: int = EVAL_CAP,
    ) -> BulkResult:
        """Register samples: valid rows are stored, each bad or duplicate row is reported.

        ``modality``: what the model's base model reads (a row with the other kind of input is
        refused); ``limits``: an image's size and pixel bounds (default: the settings');
        ``eval_cap``: the most live evaluation samples the model may hold (rows past it are
        refused)."""
        limits = limits or ImageLimits.default()
        result = BulkResult()
        placements = self._slice_ids(model.id)
        accepted: list[tuple[NewSample, _Validated]] = []
        seen: dict[str, int] = {}  # external id -> its row in this batch
        existing = self.registered_ids(model.id, [r.external_id for r in rows])
        if any(row.split is Split.eval for row in rows):
            ModelRepository.from_session(self.session).get_for_update(model.id)  # the count
        eval_room = eval_cap - self.eval_count(model.id)
        for i, row in enumerate(rows):
            try:
                validated = _validate(model, row, modality, limits)
                if row.external_id in existing:
                    raise DuplicateSampleError(f"sample {row.external_id!r} is already registered")
                if row.external_id in seen:
                    raise DuplicateSampleError(
                        f"sample {row.external_id!r} appears twice in this batch "
                        f"(first at row {seen[row.external_id]})"
                    )
                if row.split is Split.eval:
                    if eval_room <= 0:
                        raise EvalSplitFullError(
                            f"the model's evaluation split is full: it holds at most {eval_cap} "
                            "live samples (UNLEARN_EVAL_MAX_SAMPLES); delete some first"
                        )
                    eval_room -= 1
            except DomainError as error:
                ext = row.external_id if isinstance(row.external_id, str) else None
                result.errors.append(RowError(i, ext, error))
                continue
            seen[row.external_id] = i
            accepted.append((row, validated))

        samples = []
        training = [row for row, _ in accepted if row.split is Split.train]
        where_of = iter(self._placements(model, training) if training else [])
        for row, _ in accepted:
            shard_id, slice_id = (
                placements[next(where_of)] if row.split is Split.train else (None, None)
            )
            samples.append(
                Sample(
                    model_id=model.id,
                    split=row.split,
                    shard_id=shard_id,
                    slice_id=slice_id,
                    external_id=row.external_id,
                    subject_id=row.subject_id,
                )
            )
        try:
            with self.session.begin_nested():
                self.session.add_all(samples)
                self.session.flush()
                self.session.add_all(
                    SamplePayload(
                        sample_id=sample.id,
                        text=v.text,
                        features=v.features,
                        image=v.image,
                        media_type=v.media_type,
                        messages=v.messages,
                        label_index=v.label_index,
                        target=v.target,
                    )
                    for sample, (_, v) in zip(samples, accepted, strict=True)
                )
                self.session.flush()
        except IntegrityError as exc:  # a concurrent request registered one of these ids
            raise DuplicateSampleError(
                "a sample of this batch was registered concurrently"
            ) from exc
        result.stored = samples
        return result

    def _placements(self, model: Model, rows: Sequence[NewSample]) -> list[Placement]:
        """Where each row goes. Under ``subject`` placement a subject the model holds (a live
        sample) keeps its slice, a new subject goes to the least-loaded slice
        (:func:`place_subjects`), and a row without a subject goes by its id's hash, as every
        row does under ``sample``. The model row is locked first, so two registrations of one
        model read the loads one after the other and each sees the other's placements."""
        hashed = [
            place(
                str(model.id),
                row.external_id,
                row.subject_id,
                model.n_shards,
                model.n_slices,
                model.placement,
            )
            for row in rows
        ]
        if model.placement is not PlacementPolicy.subject:
            return hashed
        ModelRepository.from_session(self.session).get_for_update(model.id)
        named = sorted({row.subject_id for row in rows if row.subject_id is not None})
        held = self.subject_slices(model.id, named)
        loads = self.slice_sizes(model)
        new: dict[str, int] = {}
        for row, where in zip(rows, hashed, strict=True):
            if row.subject_id is None or row.subject_id in held:
                known = held.get(row.subject_id, where) if row.subject_id else where
                loads[known.shard][known.slice] += 1
            else:
                new[row.subject_id] = new.get(row.subject_id, 0) + 1
        chosen = {
            **held,
            **place_subjects(str(model.id), new, loads, model.n_shards, model.n_slices),
        }
        return [
            where if row.subject_id is None else chosen[row.subject_id]
            for row, where in zip(rows, hashed, strict=True)
        ]

    def subject_slices(
        self, model_id: uuid.UUID, subject_ids: Sequence[str]
    ) -> dict[str, Placement]:
        """The slice of each of these subjects that has a live sample in the model (one per
        subject: a subject lives in one slice; the lowest, should an older model disagree)."""
        found: dict[str, Placement] = {}
        for chunk in _chunks(subject_ids):
            rows = self.session.execute(
                sa.select(Sample.subject_id, Shard.index, Slice.index)
                .join(Shard, Shard.id == Sample.shard_id)
                .join(Slice, Slice.id == Sample.slice_id)
                .where(
                    Sample.model_id == model_id,
                    Sample.deleted.is_(False),
                    Sample.subject_id.in_(chunk),
                )
                .distinct()
                .order_by(Shard.index, Slice.index)
            )
            for subject, shard, slice_ in rows:
                if subject is not None:
                    found.setdefault(subject, Placement(shard, slice_))
        return found

    def registered_ids(self, model_id: uuid.UUID, external_ids: Sequence[object]) -> set[str]:
        """The external ids among these that name a live sample of the model (a deleted one
        carries only its hash)."""
        ids = [e for e in external_ids if isinstance(e, str)]
        found: set[str] = set()
        for chunk in _chunks(ids):
            found.update(
                self.session.scalars(
                    sa.select(Sample.external_id).where(
                        Sample.model_id == model_id, Sample.external_id.in_(chunk)
                    )
                )
            )
        return found

    def _slice_ids(self, model_id: uuid.UUID) -> dict[tuple[int, int], tuple[uuid.UUID, uuid.UUID]]:
        rows = self.session.execute(
            sa.select(Shard.index, Slice.index, Shard.id, Slice.id)
            .join(Slice, Slice.shard_id == Shard.id)
            .where(Shard.model_id == model_id)
        )
        return {(sh, sl): (shard_id, slice_id) for sh, sl, shard_id, slice_id in rows}

    def payloads_exist(self, sample_ids: Sequence[int]) -> bool:
        for chunk in _chunks(sample_ids):
            query = sa.select(SamplePayload.sample_id).where(SamplePayload.sample_id.in_(chunk))
            if self.session.scalar(query.limit(1)) is not None:
                return True
        return False

    def shards_of(self, sample_ids: Sequence[int]) -> set[uuid.UUID]:
        """The shards these samples were placed in (evaluation samples are in none)."""
        shards: set[uuid.UUID] = set()
        for chunk in _chunks(sample_ids):
            shards.update(
                shard_id
                for shard_id in self.session.scalars(
                    sa.select(Sample.shard_id).where(Sample.id.in_(chunk))
                )
                if shard_id is not None
            )
        return shards

    def eval_count(self, model_id: uuid.UUID) -> int:
        """The model's live evaluation samples."""
        return (
            self.session.scalar(
                sa.select(sa.func.count()).where(
                    Sample.model_id == model_id,
                    Sample.split == Split.eval,
                    Sample.deleted.is_(False),
                )
            )
            or 0
        )

    def eval_set(self, model_id: uuid.UUID) -> list[tuple[Sample, SamplePayload]]:
        """The model's live evaluation samples with their payloads, in id order."""
        rows = self.session.execute(
            sa.select(Sample, SamplePayload)
            .join(SamplePayload, SamplePayload.sample_id == Sample.id)
            .where(
                Sample.model_id == model_id,
                Sample.split == Split.eval,
                Sample.deleted.is_(False),
            )
            .order_by(Sample.id)
        )
        return [(sample, payload) for sample, payload in rows]

    def _with_payloads(
        self,
        column: InstrumentedAttribute[Any],
        values: Sequence[object],
        *conditions: sa.ColumnElement[bool],
    ) -> list[tuple[Sample, SamplePayload]]:
        """The samples whose ``column`` is among ``values`` (in chunks), with their payloads."""
        rows: list[tuple[Sample, SamplePayload]] = []
        for chunk in _chunks(values):
            rows.extend(
                self.session.execute(
                    sa.select(Sample, SamplePayload)
                    .join(SamplePayload, SamplePayload.sample_id == Sample.id)
                    .where(column.in_(chunk), *conditions)
                )
            )
        return rows

    def payloads_of(self, sample_ids: Sequence[int]) -> list[tuple[Sample, SamplePayload]]:
        """These samples with the payloads they still have, ordered by id."""
        return sorted(self._with_payloads(Sample.id, sample_ids), key=lambda pair: pair[0].id)

    def delete_payloads(self, sample_ids: Sequence[int]) -> int:
        """Hard-delete these samples' payloads; returns how many rows went."""
        gone = 0
        for chunk in _chunks(sample_ids):
            result = self.session.execute(
                sa.delete(SamplePayload).where(SamplePayload.sample_id.in_(chunk))
            )
            gone += result.rowcount  # type: ignore[attr-defined]
        return gone

    def mark_deleted(
        self,
        model_id: uuid.UUID,
        hasher: TenantHasher,
        *,
        external_ids: Sequence[str] | None = None,
        subject_id: str | None = None,
        sample_ids: Sequence[int] | None = None,
        now: datetime,
    ) -> list[MarkedSample]:
        """Mark the live samples named by exactly one selector deleted, set-based: one
        ``UPDATE … RETURNING`` (per chunk of ids), then one batch that replaces their
        identifiers (the external id by its keyed hash under the tenant's ``hasher``, the
        subject by nothing). Samples deleted
        before are left alone; the caller holds the model row, so no other deletion can mark
        the same sample in between. Returns them in id order."""
        if (external_ids is None) + (subject_id is None) + (sample_ids is None) != 2:
            raise ValueError("name the samples by exactly one selector")
        live = sa.and_(Sample.model_id == model_id, Sample.deleted.is_(False))
        conditions: list[sa.ColumnElement[bool]]
        if subject_id is not None:
            conditions = [Sample.subject_id == subject_id]
        elif external_ids is not None:
            conditions = [Sample.external_id.in_(chunk) for chunk in _chunks(external_ids)]
        else:
            assert sample_ids is not None
            conditions = [Sample.id.in_(chunk) for chunk in _chunks(sample_ids)]
        marked: list[MarkedSample] = []
        for condition in conditions:
            rows = self.session.execute(
                sa.update(Sample)
                .where(live, condition)
                .values(deleted=True, deleted_at=now, subject_id=None)
                .returning(Sample.id, Sample.external_id, Sample.shard_id, Sample.slice_id)
            )
            marked.extend(MarkedSample(*row) for row in rows)
        if marked:
            self.session.execute(
                sa.update(Sample),
                [
                    {"id": m.id, "external_id": deleted_external_id(m.external_id, hasher)}
                    for m in marked
                ],
            )
        return sorted(marked, key=lambda m: m.id)

    def deleted_ids(
        self, model_id: uuid.UUID, external_ids: Sequence[str], hasher: TenantHasher
    ) -> dict[str, int]:
        """The sample id of each of these external ids that names a deleted sample (found by
        its name under the tenant's ``hasher``)."""
        hashed = {name: e for e in external_ids for name in _deleted_names(e, hasher)}
        found: dict[str, int] = {}
        for chunk in _chunks(sorted(hashed)):
            rows = self.session.execute(
                sa.select(Sample.external_id, Sample.id).where(
                    Sample.model_id == model_id, Sample.external_id.in_(chunk)
                )
            )
            found.update({hashed[name]: sample_id for name, sample_id in rows})
        return found

    def deleted_count(self, model_id: uuid.UUID) -> dict[uuid.UUID, int]:
        """Deleted training samples per shard id."""
        rows = self.session.execute(
            sa.select(Sample.shard_id, sa.func.count())
            .where(Sample.model_id == model_id, Sample.deleted.is_(True))
            .group_by(Sample.shard_id)
        )
        return {shard_id: count for shard_id, count in rows if shard_id is not None}

    def slice_sizes(self, model: Model) -> list[list[int]]:
        """Live samples per slice: ``sizes[shard][slice]``."""
        rows = self.session.execute(
            sa.select(Shard.index, Slice.index, sa.func.count(Sample.id))
            .join(Slice, Slice.id == Sample.slice_id)
            .join(Shard, Shard.id == Sample.shard_id)
            .where(Sample.model_id == model.id, Sample.deleted.is_(False))
            .group_by(Shard.index, Slice.index)
        )
        sizes = [[0] * model.n_slices for _ in range(model.n_shards)]
        for shard, slice_, count in rows:
            sizes[shard][slice_] = count
        return sizes

    def live_external_ids_of_class(self, model_id: uuid.UUID, label_index: int) -> list[str]:
        """The external ids of the live samples labelled ``label_index``, in id order."""
        return list(
            self.session.scalars(
                sa.select(Sample.external_id)
                .join(SamplePayload, SamplePayload.sample_id == Sample.id)
                .where(
                    Sample.model_id == model_id,
                    Sample.deleted.is_(False),
                    SamplePayload.label_index == label_index,
                )
                .order_by(Sample.id)
            )
        )

    def training_set(self, slice_ids: Iterable[uuid.UUID]) -> list[tuple[Sample, SamplePayload]]:
        """The live samples of these slices with their payloads, ordered by external id."""
        rows = self._with_payloads(Sample.slice_id, list(set(slice_ids)), Sample.deleted.is_(False))
        return sorted(rows, key=lambda pair: pair[0].external_id)
