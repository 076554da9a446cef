"""The base-model catalogue's queries (``service.db.models.base_models``)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import sqlalchemy as sa

from service.db.models import BaseModel, Modality, Model
from service.db.repositories.base import Repository
from service.errors import BaseModelInUseError, BaseModelNotFoundError, ConflictError

#: The most base models one listing returns: a catalogue is small.
LIST_LIMIT = 500


class BaseModelRepository(Repository):
    def find(self, name: str) -> BaseModel | None:
        return self.session.scalar(sa.select(BaseModel).where(BaseModel.name == name))

    def by_name(self, name: str) -> BaseModel:
        """The base model, or a 404 problem naming the registered ones."""
        base = self.find(name)
        if base is None:
            known = ", ".join(self.names()) or "none"
            raise BaseModelNotFoundError(
                f"no base model named {name!r}; registered: {known}", known=self.names()
            )
        return base

    def get(self, base_model_id: uuid.UUID) -> BaseModel:
        base = self.session.get(BaseModel, base_model_id)
        if base is None:
            raise BaseModelNotFoundError(f"no base model {base_model_id}")
        return base

    def names(self) -> list[str]:
        return list(self.session.scalars(sa.select(BaseModel.name).order_by(BaseModel.name)))

    def list(self, limit: int = LIST_LIMIT) -> Sequence[BaseModel]:
        return self.session.scalars(
            sa.select(BaseModel).order_by(BaseModel.name).limit(limit)
        ).all()

    def usage(self) -> dict[uuid.UUID, int]:
        """How many models (of every tenant) use each base model that any uses."""
        rows = self.session.execute(
            sa.select(Model.base_model_id, sa.func.count()).group_by(Model.base_model_id)
        )
        return {base_id: int(count) for base_id, count in rows}

    def add(
        self,
        *,
        name: str,
        family: str,
        modality: Modality,
        uri: str,
        sha256: str,
        n_layers: int,
        hidden_size: int,
        default_targets: Sequence[str],
    ) -> BaseModel:
        if self.find(name) is not None:
            raise ConflictError(f"a base model named {name!r} is registered")
        base = BaseModel(
            name=name,
            family=family,
            modality=modality,
            uri=uri,
            sha256=sha256,
            n_layers=n_layers,
            hidden_size=hidden_size,
            default_targets=list(default_targets),
        )
        self.session.add(base)
        self.session.flush()
        return base

    def remove(self, name: str) -> None:
        """Remove an unused base model; one that any model names is a 409 problem."""
        base = self.by_name(name)
        users = self.session.scalar(
            sa.select(sa.func.count()).select_from(Model).where(Model.base_model_id == base.id)
        )
        if users:
            raise BaseModelInUseError(
                f"base model {name!r} is used by {users} model(s); delete them first",
                models=int(users or 0),
            )
        self.session.delete(base)
        self.session.flush()
