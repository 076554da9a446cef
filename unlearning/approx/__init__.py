"""Approximate unlearning passes on a served prefix's LoRA parameters and head.

Each method is a module with a validated config: SSD (:mod:`ssd`), IAU (:mod:`iau`), the
baselines fine-tuning on the retain set, gradient ascent on the forget set and random labels on
the forget set (:mod:`baselines`), l1-sparse fine-tuning and prune-then-unlearn
(:mod:`sparsity`), SalUn and RBM's saliency masks (:mod:`saliency`), Blindspot and Gaussian
fine-tuning for regression (:mod:`regression`), label-free LAF (:mod:`laf`) and class
unlearning by concept poisoning (:mod:`concepts`). They work on a
:class:`PrefixModel`: the frozen backbone, the prefix's adapters (the editable stages' as
parameters) and its head. Each module registers its methods by name in :mod:`registry` (with
their config class, the tasks they fit and what they read); :mod:`prefix_pass` runs one by name.
"""

from unlearning.approx.data import Examples, UnlearningInputError
from unlearning.approx.model import PrefixModel

__all__ = ["Examples", "PrefixModel", "UnlearningInputError"]
