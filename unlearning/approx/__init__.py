"""Approximate unlearning passes on a served prefix's LoRA parameters and head.

Each method is a module with a validated config: SSD (:mod:`ssd`), IAU (:mod:`iau`) and the
baselines fine-tuning on the retain set, gradient ascent on the forget set and random labels on
the forget set (:mod:`baselines`). They work on a :class:`PrefixModel`: the frozen backbone, the
prefix's adapters (the editable stages' as parameters) and its head.
"""

from unlearning.approx.data import Examples, UnlearningInputError
from unlearning.approx.model import PrefixModel

__all__ = ["Examples", "PrefixModel", "UnlearningInputError"]
