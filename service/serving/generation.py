"""A causal LM's generation under the freshness rule, token by token.

Each step computes the next token on the layers the generation holds, then reads the model's
serving generation. If it moved since the layers were last known valid and any of them is no
longer valid, the token is not emitted: the generation is rebased onto the model's current
served layers (its caches rebuilt from the prompt and the tokens accepted so far) and the token
is computed again. So a token emitted after a deletion's 202 never comes from a layer that
deletion invalidated, and deletions elsewhere cost no recomputation. The process's forward-pass
lock is held for one step at a time (:meth:`ServingRegistry.computing`), so concurrent
generations interleave.
"""

from __future__ import annotations

import uuid
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

from service.errors import ConflictError, InvalidInputError, ServingUnavailableError
from service.serving.registry import MAX_ATTEMPTS, ServedModel, ServingRegistry
from unlearning.artifacts import ArtifactNotFoundError
from unlearning.families import Conversation
from unlearning.families.chat import eos_id
from unlearning.s3t.generation import Generation, Sampling, prompt_ids


@dataclass(frozen=True)
class Step:
    """One emitted token and the layers that computed it."""

    token: int
    logprob: float
    model: ServedModel
    generation: int  # a generation at which every layer that computed it was still valid
    rebased: bool  # computed again on other layers after a deletion


def context_size(model_config: Any) -> int | None:
    """How many positions the base model holds (None: no fixed limit known)."""
    for name in ("max_position_embeddings", "n_positions"):
        value = getattr(model_config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


class FreshGeneration:
    """One prompt's generation on a model's current served layers, checked at every token.

    Holds one of the process's generation slots from creation until :meth:`close` (use it as a
    context manager). Creation checks the prompt against ``max_prompt_tokens`` and the base
    model's context (with ``max_new_tokens`` to come): a 422 problem otherwise."""

    def __init__(
        self,
        registry: ServingRegistry,
        model_id: uuid.UUID,
        prompt: Conversation | str,
        sampling: Sampling,
        *,
        max_new_tokens: int,
        max_prompt_tokens: int,
    ) -> None:
        self._registry = registry
        self.model_id = model_id
        self._exit = ExitStack()
        self._exit.enter_context(registry.generation_slot())
        try:
            self.served = self._served()
            with registry.computing(self.served.base) as engine:
                tokenizer = engine.backbone.processor
                ids = prompt_ids(tokenizer, prompt)
                _check_length(len(ids), max_new_tokens, max_prompt_tokens, engine.backbone)
                self._generation = Generation(
                    engine.lm(self.served.config, self.served.prefixes), ids, sampling
                )
        except BaseException:
            self._exit.close()
            raise
        self.tokenizer = tokenizer
        self.end_token = eos_id(tokenizer)
        self.prompt_tokens = len(ids)
        self.checked = self.served.generation  # the layers were all valid at this generation
        self.rebases = 0

    def __enter__(self) -> FreshGeneration:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Give the generation slot back (idempotent)."""
        self._exit.close()

    @property
    def generated(self) -> list[int]:
        return self._generation.generated

    def step(self) -> Step:
        """Compute the next token, check its layers, recompute it on the current ones if a
        deletion turned any off, and accept it."""
        rebased = False
        for _ in range(MAX_ATTEMPTS):
            with self._registry.computing(self.served.base):
                token, logprob = self._generation.propose()
            now = self._registry.generation(self.model_id)
            if now == self.checked or self._registry.still_valid(self.served):
                self.checked = now
                self._generation.accept()
                return Step(token, logprob, self.served, now, rebased)
            self._rebase()
            rebased = True
        raise ServingUnavailableError("the model changed during every attempt to answer; retry")

    def _served(self) -> ServedModel:
        served = self._registry.current(self.model_id)
        refusal = served.refusal()
        if refusal is not None:
            raise ConflictError(refusal)
        return served

    def _rebase(self) -> None:
        """Continue on the model's current served layers (the caches are rebuilt)."""
        for _ in range(MAX_ATTEMPTS):
            served = self._served()
            try:
                with self._registry.computing(served.base) as engine:
                    self._generation.rebase(engine.lm(served.config, served.prefixes))
            except ArtifactNotFoundError:  # collected: the model moved on since `served`
                if self._registry.generation(self.model_id) == served.generation:
                    raise
                continue
            self.served, self.checked = served, served.generation
            self.rebases += 1
            return
        raise ServingUnavailableError("the model changed during every attempt to answer; retry")


def _check_length(prompt_tokens: int, max_new_tokens: int, limit: int, backbone: Any) -> None:
    if prompt_tokens > limit:
        raise InvalidInputError(
            f"the prompt is {prompt_tokens} tokens as the chat template renders it; at most "
            f"{limit} (UNLEARN_LM_MAX_PROMPT_TOKENS)"
        )
    context = context_size(backbone.model.config)
    if context is not None and prompt_tokens + max_new_tokens > context:
        raise InvalidInputError(
            f"the prompt ({prompt_tokens} tokens) and `max_new_tokens` ({max_new_tokens}) "
            f"exceed the base model's context of {context} tokens"
        )
