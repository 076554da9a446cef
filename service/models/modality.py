"""What a model reads, texts or images: the one place the service asks it.

Samples and predictions are checked against it before anything is stored or computed, so that a
text for an image model (or an image for a text model) is a clear 422 rather than a training
job that fails later."""

from __future__ import annotations

from service.db.models import Model
from unlearning.families import Modality


def modality_of(model: Model) -> Modality:
    """The modality of the base model the model fine-tunes (fixed when it was created)."""
    return Modality(model.base_model.modality.value)
