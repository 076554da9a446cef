"""Serving a causal LM's live shards together: scoring completions and generating tokens.

The shards answer as one model: at every position each shard's next-token log-probabilities are
computed, averaged over the shards and renormalised (a product of experts, the log-space mean of
the ensemble). Below the lowest adapted layer of the served prefixes the model is the frozen
base, so that part runs once; above it the shards' rows are stacked along the batch and each
shard's LoRA deltas apply to its own rows (:class:`EnsemblePredictor.adapters`).

Generation keeps two KV caches, one for the frozen bottom (one row) and one for the adapted top
(one row per shard), so each new token costs one position's forward. :class:`Generation` lets its
caller check, after every token is computed, that the layers it came from are still valid and
:meth:`Generation.rebase` onto other shards otherwise: the token is then computed again from the
new layers, so a deletion's next token comes from none of its layers. Seeded sampling draws each
token from a generator seeded by (seed, position), so a rebased token is drawn the same way.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import DynamicCache

from unlearning.families.chat import Conversation, Segment, render_ids, token_ids
from unlearning.s3t.backbone import Backbone
from unlearning.s3t.ensemble import EnsemblePredictor, ServedShard, lowest_layer


@dataclass(frozen=True)
class Sampling:
    """Greedy decoding (``temperature`` 0) or sampling at ``temperature`` from the smallest set
    of tokens holding ``top_p`` of the probability, seeded."""

    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.temperature <= 10.0:
            raise ValueError(f"`temperature` must be in [0, 10], got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"`top_p` must be in (0, 1], got {self.top_p}")
        if not 0 <= self.seed < 2**63:
            raise ValueError(f"`seed` must be in [0, 2**63), got {self.seed}")

    def pick(self, logprobs: torch.Tensor, position: int) -> int:
        """The token at ``position`` from the ensemble's log-probabilities ``[vocab]``."""
        if self.temperature == 0.0:
            return int(torch.argmax(logprobs))
        probs = torch.softmax(logprobs.float().cpu() / self.temperature, dim=-1)
        if self.top_p < 1.0:
            sorted_probs, order = torch.sort(probs, descending=True)
            keep = torch.cumsum(sorted_probs, dim=-1) - sorted_probs < self.top_p
            probs = torch.zeros_like(probs).scatter(0, order[keep], sorted_probs[keep])
        digest = hashlib.sha256(f"{self.seed}:{position}".encode()).digest()
        generator = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)
        return int(torch.multinomial(probs, 1, generator=generator))


def ensemble_logprobs(logits: torch.Tensor) -> torch.Tensor:
    """``[shards, ..., vocab]`` logits -> the shards' mean log-probabilities, renormalised."""
    mean = torch.log_softmax(logits.float(), dim=-1).mean(dim=0)
    return torch.log_softmax(mean, dim=-1)


@dataclass(frozen=True)
class Scored:
    """A completion's tokens and each one's log-probability under the ensemble."""

    token_ids: tuple[int, ...]
    logprobs: tuple[float, ...]

    @property
    def total(self) -> float:
        return float(sum(self.logprobs))


def prompt_ids(tokenizer: Any, prompt: Conversation | str) -> list[int]:
    """A prompt's tokens: a conversation rendered up to the opening of the assistant's turn, or
    a plain text as it is."""
    return render_ids(tokenizer, prompt, generation_prompt=True)[0]


class LmEnsemble:
    """A causal LM's live shards on one frozen decoder."""

    def __init__(
        self, backbone: Backbone, predictor: EnsemblePredictor, shards: Sequence[ServedShard]
    ) -> None:
        if not backbone.causal:
            raise ValueError(f"a {backbone.family.name} model does not generate")
        if not shards:
            raise ValueError("no live shard to serve from")
        self.backbone = backbone
        self.predictor = predictor
        self.shards = tuple(shards)
        self.depth = lowest_layer(self.shards, backbone.n_layers)

    def score(
        self,
        prompts: Sequence[Conversation | str],
        completions: Sequence[str],
        *,
        chunk: int = 16,
    ) -> list[Scored]:
        """Each completion's token log-probabilities after its prompt, ``chunk`` rows at a time
        (the vocabulary-wide log-probabilities of a chunk are what is held in memory)."""
        if len(prompts) != len(completions):
            raise ValueError("one completion per prompt")
        tokenizer = self.backbone.processor
        rows = []
        for prompt, completion in zip(prompts, completions, strict=True):
            ids = prompt_ids(tokenizer, prompt)
            completion_ids = token_ids(tokenizer, [Segment(completion, True)])[0]
            if not ids or not completion_ids:
                raise ValueError("a prompt and its completion need at least one token each")
            rows.append((ids, completion_ids))
        scored: list[Scored] = []
        for first in range(0, len(rows), chunk):
            scored.extend(self._score_rows(rows[first : first + chunk]))
        return scored

    def _score_rows(self, rows: Sequence[tuple[list[int], list[int]]]) -> list[Scored]:
        width = max(len(p) + len(c) for p, c in rows)
        inputs = torch.zeros((len(rows), width), dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for row, (p, c) in enumerate(rows):
            inputs[row, : len(p) + len(c)] = torch.tensor(p + c)
            mask[row, : len(p) + len(c)] = 1
        logprobs = self._logprobs(inputs.to(self.backbone.device), mask.to(self.backbone.device))
        scored = []
        for row, (p, c) in enumerate(rows):
            positions = torch.arange(len(p) - 1, len(p) + len(c) - 1)
            picked = logprobs[row, positions, torch.tensor(c)]
            scored.append(Scored(tuple(c), tuple(float(x) for x in picked.cpu())))
        return scored

    def _logprobs(self, inputs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Ensemble next-token log-probabilities at every position, ``[rows, width, vocab]``."""
        backbone, n = self.backbone, len(self.shards)
        with torch.no_grad():
            hidden = backbone.run(backbone.embed_tokens(inputs, 0), mask, 0, self.depth)
            hidden, stacked = hidden.repeat(n, 1, 1), mask.repeat(n, 1)
            with self.predictor.adapters(self.shards, self.depth):
                hidden = backbone.run(hidden, stacked, self.depth, backbone.n_layers)
            logits = backbone.logits(hidden)
        return ensemble_logprobs(logits.view(n, len(inputs), *logits.shape[1:]))


@dataclass
class Generation:
    """One prompt's generation, a token at a time: :meth:`propose` computes the next token,
    :meth:`accept` appends it; :meth:`rebase` moves to other shards (rebuilding the caches from
    the prompt and the tokens accepted so far)."""

    ensemble: LmEnsemble
    prompt: list[int]
    sampling: Sampling = field(default_factory=Sampling)
    generated: list[int] = field(default_factory=list)
    _bottom: Any = field(default=None, init=False, repr=False)  # the frozen bottom's KV cache
    _top: Any = field(default=None, init=False, repr=False)  # the shards' KV cache
    _cached: int = field(default=0, init=False)  # tokens the caches hold
    _proposal: tuple[int, float] | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if not self.prompt:
            raise ValueError("an empty prompt")
        self.rebase(self.ensemble)

    @property
    def ids(self) -> list[int]:
        return self.prompt + self.generated

    def rebase(self, ensemble: LmEnsemble) -> None:
        """Serve the rest of the generation from ``ensemble``; the caches restart."""
        self.ensemble = ensemble
        self._bottom, self._top, self._cached = DynamicCache(), DynamicCache(), 0
        self._proposal = None

    def propose(self) -> tuple[int, float]:
        """The next token and its ensemble log-probability (computed once per position)."""
        if self._proposal is None:
            logprobs = self._next_logprobs()
            token = self.sampling.pick(logprobs, len(self.generated))
            self._proposal = (token, float(logprobs[token]))
        return self._proposal

    def accept(self) -> int:
        token, _ = self.propose()
        self.generated.append(token)
        self._proposal = None
        return token

    def _next_logprobs(self) -> torch.Tensor:
        ensemble = self.ensemble
        backbone, n, depth = ensemble.backbone, len(ensemble.shards), ensemble.depth
        ids = self.ids
        device = backbone.device
        new = torch.tensor([ids[self._cached :]], dtype=torch.long, device=device)
        mask = torch.ones((1, len(ids)), dtype=torch.long, device=device)
        past = self._cached
        with torch.no_grad():
            hidden = backbone.embed_tokens(new, past)
            hidden = backbone.run_cached(hidden, mask, 0, depth, past, self._bottom)
            hidden = hidden.repeat(n, 1, 1)
            with ensemble.predictor.adapters(ensemble.shards, depth):
                hidden = backbone.run_cached(
                    hidden, mask.repeat(n, 1), depth, backbone.n_layers, past, self._top
                )
            logits = backbone.logits(hidden[:, -1:])
        self._cached = len(ids)
        return ensemble_logprobs(logits)[-1]


@dataclass
class StopText:
    """Incremental text of generated tokens, cut before the first stop string; text that could
    still become a stop string is held back until it cannot."""

    tokenizer: Any
    stops: tuple[str, ...] = ()
    emitted: str = ""
    stopped: bool = False

    def piece(self, generated: Sequence[int]) -> str:
        """The text to emit after ``generated`` (all tokens so far)."""
        text = self.tokenizer.decode(list(generated), skip_special_tokens=True)
        cut = min((i for i in (text.find(s) for s in self.stops if s) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            text = text[:cut]
        else:
            text = text[: len(text) - self._held(text)]
        piece = text[len(self.emitted) :] if text.startswith(self.emitted) else ""
        self.emitted = text if text.startswith(self.emitted) else self.emitted
        return piece

    def flush(self, generated: Sequence[int]) -> str:
        """What was held back, once generation ended without a stop string."""
        if self.stopped:
            return ""
        text = self.tokenizer.decode(list(generated), skip_special_tokens=True)
        piece = text[len(self.emitted) :] if text.startswith(self.emitted) else ""
        self.emitted += piece
        return piece

    def _held(self, text: str) -> int:
        """The longest end of ``text`` that begins some stop string."""
        longest = 0
        for stop in self.stops:
            for size in range(min(len(stop) - 1, len(text)), longest, -1):
                if stop.startswith(text[-size:]):
                    longest = size
                    break
        return longest
