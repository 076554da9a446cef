"""Request and response bodies of a causal LM's generate and score endpoints."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from service.models.schemas import MAX_MESSAGES, MAX_TEXT, Message, ShardStatusBrief


def _not_blank(text: str) -> str:
    if not text.strip():
        raise ValueError("must not be blank")
    return text


class PromptIn(BaseModel):
    """A prompt: a plain instruction, or chat messages ending with a user turn (exactly one)."""

    model_config = ConfigDict(extra="forbid")

    prompt: Annotated[str, Field(max_length=MAX_TEXT), AfterValidator(_not_blank)] | None = Field(
        None, description="An instruction, rendered as one user turn of the chat template."
    )
    messages: list[Message] | None = Field(
        None,
        min_length=1,
        max_length=MAX_MESSAGES,
        description="Instead of `prompt`: an optional system message, then user and assistant "
        "turns alternating, ending with the user turn to answer.",
    )

    @model_validator(mode="after")
    def _one_prompt(self) -> PromptIn:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give exactly one of `prompt` and `messages`")
        return self


class GenerateRequest(PromptIn):
    max_new_tokens: int = Field(
        64, ge=1, description="At most UNLEARN_LM_MAX_NEW_TOKENS (more is a 422 problem)."
    )
    temperature: float = Field(0.0, ge=0, le=10, description="0: greedy decoding.")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling's probability mass.")
    seed: int = Field(
        0, ge=0, lt=2**63, description="Seeds sampling: the same request draws the same tokens."
    )
    stop: list[Annotated[str, Field(min_length=1, max_length=200)]] = Field(
        default_factory=list,
        max_length=16,
        description="Strings that end the generation; the text ends before the first one.",
    )
    stream: bool = Field(
        False,
        description="Answer with server-sent events (`text/event-stream`): a `token` event per "
        "text piece, then a `done` event (or an `error` event with a problem document).",
    )


FinishReason = Literal["eos", "stop", "length"]


class GeneratedPiece(BaseModel):
    """A `token` event of a streamed generation."""

    text: str = Field(description="The text these tokens add (text that may begin a stop "
                      "string is held back until it cannot).")  # fmt: skip
    token_ids: list[int]
    serving_generation: int = Field(
        description="A generation at which every layer that computed these tokens was valid."
    )
    shards: list[ShardStatusBrief] | None = Field(
        None,
        description="The layers that computed these tokens, on the first event and whenever "
        "they change (a deletion moved the generation onto other layers); else null.",
    )


class GenerateResponse(BaseModel):
    """A whole generation (the JSON answer, and the `done` event of a stream)."""

    text: str
    token_ids: list[int]
    finish_reason: FinishReason = Field(
        description="`eos`: the model ended its response; `stop`: a stop string; `length`: "
        "`max_new_tokens`."
    )
    prompt_tokens: int
    serving_generation: int = Field(
        description="A generation at which every layer that computed the last token was valid."
    )
    shards: list[ShardStatusBrief] = Field(description="The layers that computed the last token.")
    layers: list[int] = Field(
        description="Every layer id that computed any token of this generation: a deletion's "
        "certificate lists the layers it invalidated, so anyone can check that no token sent "
        "after its 202 came from one."
    )
    rebased: int = Field(
        description="How often deletions moved the generation onto other layers mid-way."
    )


class ScoreRequest(PromptIn):
    completions: list[Annotated[str, Field(min_length=1, max_length=MAX_TEXT)]] = Field(
        min_length=1,
        description="Texts that may follow the prompt (the assistant's response), at most "
        "UNLEARN_LM_MAX_COMPLETIONS, each at most UNLEARN_LM_MAX_NEW_TOKENS tokens.",
    )


class ScoredCompletion(BaseModel):
    token_ids: list[int]
    logprobs: list[float] = Field(description="Each token's log-probability under the ensemble.")
    total: float = Field(description="Their sum: the completion's log-probability.")


class ScoreResponse(BaseModel):
    prompt_tokens: int
    serving_generation: int = Field(
        description="A generation at which every layer that scored was still valid."
    )
    shards: list[ShardStatusBrief]
    layers: list[int] = Field(description="The ids of the layers that scored.")
    scores: list[ScoredCompletion]
