"""A causal LM's generations and scores: the request checked against the model and the limits,
the tokens turned into text (stop strings, end of response), and the events of a stream.

Runs outside the request's transaction (like a prediction): the serving registry reads the
model's generation itself, per score and per generated token."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator

from sqlalchemy.orm import Session

from service.db.models import Task
from service.errors import DomainError, InvalidInputError, WrongTaskError
from service.generation.schemas import (
    FinishReason,
    GeneratedPiece,
    GenerateRequest,
    GenerateResponse,
    PromptIn,
    ScoredCompletion,
    ScoreRequest,
    ScoreResponse,
)
from service.models.schemas import ShardStatusBrief
from service.models.service import get_model
from service.serving.generation import FreshGeneration
from service.serving.registry import ServedModel, ServingRegistry
from service.settings import Settings
from unlearning.families import Conversation
from unlearning.families.chat import Segment, token_ids
from unlearning.s3t import S3TEngine
from unlearning.s3t.generation import Sampling, StopText, prompt_ids

log = logging.getLogger(__name__)


def lm_prompt(
    session: Session, tenant_id: uuid.UUID, model_id: uuid.UUID, request: PromptIn
) -> Conversation:
    """The request's prompt, for a causal LM of this tenant (a 404 for another tenant's model,
    a 422 problem for a classifier or regressor)."""
    model = get_model(session, tenant_id, model_id)
    if model.task is not Task.causal_lm:
        raise WrongTaskError(
            f"model {model_id} is a {model.task.value} model: it answers "
            f"POST /models/{model_id}/predict; generate and score are for causal_lm models"
        )
    if request.prompt is not None:
        return Conversation.prompt(request.prompt)
    assert request.messages is not None
    try:
        conversation = Conversation(tuple((m.role, m.content) for m in request.messages))
    except ValueError as error:
        raise InvalidInputError(f"`messages`: {error}") from error
    if conversation.ends_with_assistant:
        raise InvalidInputError("`messages` must end with the user turn the model answers")
    return conversation


def shard_briefs(model: ServedModel) -> list[ShardStatusBrief]:
    return [
        ShardStatusBrief(
            shard=s.shard,
            sequence=s.sequence,
            stages=s.length,
            approximate_stages=s.approximate_stages,
            layers=list(s.layer_ids),
        )
        for s in model.shards
    ]


def _layer_ids(model: ServedModel) -> set[int]:
    return {i for shard in model.shards for i in shard.layer_ids}


def start_generation(
    registry: ServingRegistry,
    model_id: uuid.UUID,
    prompt: Conversation,
    request: GenerateRequest,
    settings: Settings,
) -> FreshGeneration:
    """The generation, checked against the limits and holding a generation slot (a 429
    problem when the process runs its most already); close it, or run :func:`events`."""
    if request.max_new_tokens > settings.lm_max_new_tokens:
        raise InvalidInputError(
            f"`max_new_tokens` ({request.max_new_tokens}) exceeds {settings.lm_max_new_tokens} "
            "(UNLEARN_LM_MAX_NEW_TOKENS)"
        )
    return FreshGeneration(
        registry,
        model_id,
        prompt,
        Sampling(request.temperature, request.top_p, request.seed),
        max_new_tokens=request.max_new_tokens,
        max_prompt_tokens=settings.lm_max_prompt_tokens,
    )


def events(
    generation: FreshGeneration, request: GenerateRequest
) -> Iterator[GeneratedPiece | GenerateResponse]:
    """Run the generation: a piece per text piece (and whenever the layers change), then the
    whole answer. The caller closes the generation (:func:`generate` and
    :func:`server_sent_events` do)."""
    text = StopText(generation.tokenizer, tuple(request.stop))
    reason: FinishReason = "length"
    used: set[int] = set()
    announced: ServedModel | None = None
    pending: list[int] = []
    step = None
    while len(generation.generated) < request.max_new_tokens:
        step = generation.step()
        used |= _layer_ids(step.model)
        if step.token == generation.end_token:
            reason = "eos"
            break
        pending.append(step.token)
        piece = text.piece(generation.generated)
        if text.stopped:
            reason = "stop"
        if piece or step.model is not announced:
            yield GeneratedPiece(
                text=piece,
                token_ids=pending,
                serving_generation=step.generation,
                shards=None if step.model is announced else shard_briefs(step.model),
            )
            announced, pending = step.model, []
        if text.stopped:
            break
    tail = text.flush(generation.generated)
    if tail or pending:
        assert step is not None
        yield GeneratedPiece(
            text=tail, token_ids=pending, serving_generation=step.generation, shards=None
        )
    served = generation.served
    yield GenerateResponse(
        text=text.emitted,
        token_ids=generation.generated,
        finish_reason=reason,
        prompt_tokens=generation.prompt_tokens,
        serving_generation=step.generation if step is not None else generation.checked,
        shards=shard_briefs(step.model if step is not None else served),
        layers=sorted(used),
        rebased=generation.rebases,
    )


def generate(generation: FreshGeneration, request: GenerateRequest) -> GenerateResponse:
    """The whole generation as one answer; the generation is closed."""
    with generation:
        for event in events(generation, request):
            if isinstance(event, GenerateResponse):
                return event
    raise AssertionError("a generation ends with its answer")


def server_sent_events(generation: FreshGeneration, request: GenerateRequest) -> Iterator[str]:
    """The events as ``text/event-stream``: ``token`` events, then ``done``; an error once the
    stream has started is an ``error`` event carrying its problem document. The generation is
    closed when the stream ends (the route also closes it once the response is over, in case
    the stream never started)."""
    try:
        for event in events(generation, request):
            name = "done" if isinstance(event, GenerateResponse) else "token"
            yield _sse(name, event.model_dump_json())
    except DomainError as error:
        yield _sse("error", json.dumps(_problem(error.status_code, error.title, error.detail)))
    except Exception:
        log.exception("a streamed generation failed")
        yield _sse("error", json.dumps(_problem(500, "Internal server error", "it was logged")))
    finally:
        generation.close()


def _problem(status: int, title: str, detail: str) -> dict[str, object]:
    from service.api.problems import PROBLEM_TYPE_BASE

    slug = "internal" if status == 500 else title.lower().replace(" ", "-")
    return {"type": PROBLEM_TYPE_BASE + slug, "title": title, "status": status, "detail": detail}


def _sse(event: str, data: str) -> str:
    return f"event: {event}\ndata: {data}\n\n"


def score(
    registry: ServingRegistry,
    model_id: uuid.UUID,
    prompt: Conversation,
    request: ScoreRequest,
    settings: Settings,
) -> ScoreResponse:
    """Each completion's token log-probabilities after the prompt, on the model's current
    valid layers (the freshness rule of predictions)."""
    if len(request.completions) > settings.lm_max_completions:
        raise InvalidInputError(
            f"{len(request.completions)} completions; at most {settings.lm_max_completions} "
            "(UNLEARN_LM_MAX_COMPLETIONS)"
        )

    def compute(engine: S3TEngine, served: ServedModel) -> tuple[int, list[ScoredCompletion]]:
        tokenizer = engine.backbone.processor
        length = len(prompt_ids(tokenizer, prompt))
        if length > settings.lm_max_prompt_tokens:
            raise InvalidInputError(
                f"the prompt is {length} tokens as the chat template renders it; at most "
                f"{settings.lm_max_prompt_tokens} (UNLEARN_LM_MAX_PROMPT_TOKENS)"
            )
        for index, completion in enumerate(request.completions):
            size = len(token_ids(tokenizer, [Segment(completion, True)])[0])
            if size > settings.lm_max_new_tokens:
                raise InvalidInputError(
                    f"`completions[{index}]` is {size} tokens; at most "
                    f"{settings.lm_max_new_tokens} (UNLEARN_LM_MAX_NEW_TOKENS)"
                )
            if size == 0:
                raise InvalidInputError(f"`completions[{index}]` has no token")
        scored = engine.lm(served.config, served.prefixes).score(
            [prompt] * len(request.completions), request.completions
        )
        return length, [
            ScoredCompletion(token_ids=list(s.token_ids), logprobs=list(s.logprobs), total=s.total)
            for s in scored
        ]

    (length, scores), served, generation = registry.answer(model_id, compute)
    return ScoreResponse(
        prompt_tokens=length,
        serving_generation=generation,
        shards=shard_briefs(served),
        layers=sorted(_layer_ids(served)),
        scores=scores,
    )
