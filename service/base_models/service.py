"""Registering, listing and removing base models; where a base model's files are on this machine.

Base models are deployment-wide and managed by operators (``unlearn base-models``); tenants
only list them and name one when they create a model. Registration reads the folder offline,
refuses an architecture no family adapter supports, and records the digest of the weights that
every later load checks. Flushes, never commits.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.orm import Session

from service.base_models.schemas import BaseModelList, BaseModelPublic
from service.db.models import BaseModel, Modality
from service.db.models.base_models import NAME_PATTERN
from service.db.repositories import BaseModelRepository
from service.errors import InvalidBaseModelError
from service.settings import Settings, parse_s3_url
from unlearning.base_models import BaseModelError, describe, download_s3

log = logging.getLogger(__name__)

#: Where a machine keeps the base models it downloaded, by digest, under ``data_dir``.
DOWNLOADS = "base-models"


def default_folder(settings: Settings) -> Path:
    """The folder of the deployment's default base model: ``backbone_path``, else MiniLM-L6."""
    if settings.backbone_path is not None:
        return settings.backbone_path.resolve()
    from unlearning.s3t import default_backbone_path

    return default_backbone_path()


def local_folder(uri: str, settings: Settings, sha256: str | None = None) -> Path:
    """The folder holding a base model's files on this machine: the folder itself, or an
    ``s3://`` prefix downloaded (once) into ``<data_dir>/base-models/<sha256>/``."""
    if not uri.startswith("s3://"):
        return Path(uri)
    from service.engine import s3_client

    bucket, prefix = parse_s3_url(uri)
    return download_s3(
        s3_client(settings), bucket, prefix, settings.data_dir.resolve() / DOWNLOADS, sha256
    )


def register(session: Session, settings: Settings, name: str, uri: str) -> BaseModel:
    """Register the Hugging Face folder (or ``s3://bucket/prefix``) at ``uri`` as ``name``.

    An unsupported architecture, a folder without weights or config, or a taken name is an
    :class:`InvalidBaseModelError` (a 422) or a conflict, here, never when a model trains."""
    if not re.fullmatch(NAME_PATTERN, name):
        raise InvalidBaseModelError(
            f"base model name {name!r}: 1 to 100 lowercase letters, digits, `.`, `_`, `-`, "
            "starting with a letter or digit"
        )
    location = uri if uri.startswith("s3://") else str(Path(uri).expanduser().resolve())
    try:
        folder = local_folder(location, settings)
        described = describe(folder)
    except (BaseModelError, ValueError, OSError) as error:
        raise InvalidBaseModelError(f"base model {name!r} at {location}: {error}") from error
    return BaseModelRepository.from_session(session).add(
        name=name,
        family=described.family,
        modality=Modality(described.modality),
        uri=location,
        sha256=described.sha256,
        n_layers=described.n_layers,
        hidden_size=described.hidden_size,
        default_targets=described.default_targets,
    )


def ensure_default_base_model(session: Session, settings: Settings) -> BaseModel:
    """The base model named ``default_base_model``, registered from :func:`default_folder`
    when the catalogue lacks it. Idempotent, and safe against a concurrent registration of the
    same name (the loser reads the winner's row)."""
    repository = BaseModelRepository.from_session(session)
    found = repository.find(settings.default_base_model)
    if found is not None:
        return found
    try:
        with session.begin_nested():
            base = register(
                session, settings, settings.default_base_model, str(default_folder(settings))
            )
    except sa.exc.IntegrityError:  # registered meanwhile by another process
        return repository.by_name(settings.default_base_model)
    log.info("registered the default base model %s (%s)", base.name, base.sha256)
    return base


def base_model_public(base: BaseModel, settings: Settings) -> BaseModelPublic:
    return BaseModelPublic(
        name=base.name,
        family=base.family,
        modality=base.modality.value,
        sha256=base.sha256,
        n_layers=base.n_layers,
        hidden_size=base.hidden_size,
        default_targets=list(base.default_targets),
        default=base.name == settings.default_base_model,
        created_at=base.created_at,
    )


def list_base_models(session: Session, settings: Settings) -> BaseModelList:
    """Every registered base model, by name (a catalogue is small: at most ``LIST_LIMIT``)."""
    return BaseModelList(
        items=[
            base_model_public(base, settings)
            for base in BaseModelRepository.from_session(session).list()
        ]
    )


def read_base_model(session: Session, settings: Settings, name: str) -> BaseModelPublic:
    return base_model_public(BaseModelRepository.from_session(session).by_name(name), settings)


def remove(session: Session, name: str) -> None:
    """Remove a base model no model uses (a 409 problem while any does). Its downloaded copy,
    if any, stays on each machine: the digest names it, so re-registering reuses it."""
    BaseModelRepository.from_session(session).remove(name)
