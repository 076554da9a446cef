"""Instruction samples for causal language models, and how they become token ids.

A :class:`Conversation` is an instruction pair (a prompt and its response) or chat messages. It
is rendered with the base tokenizer's chat template when the tokenizer has one, otherwise with
:data:`DEFAULT_TEMPLATE`, an Alpaca-style template::

    {system}\\n\\n                              (when there is a system message)
    ### Instruction:\\n{user}\\n\\n### Response:\\n{assistant}<eos>\\n\\n

The rendering is cut into segments, each tokenised on its own and concatenated, so the tokens of a
turn never depend on the turns after it; the loss covers the assistant segments only (and their
end-of-sequence token). A plain text (a ``str`` sample) is one segment, all of it in the loss.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

ROLES = ("system", "user", "assistant")

DEFAULT_TEMPLATE = "alpaca"
_INSTRUCTION = "### Instruction:\n"
_RESPONSE = "\n\n### Response:\n"


@dataclass(frozen=True)
class Conversation:
    """Chat messages as ``(role, content)`` pairs: an optional leading system message, then
    user and assistant turns alternating, starting with a user turn."""

    messages: tuple[tuple[str, str], ...]

    def __post_init__(self) -> None:
        if not self.messages:
            raise ValueError("a conversation needs at least one message")
        turns = list(self.messages)
        if turns[0][0] == "system":
            turns = turns[1:]
        for index, (role, content) in enumerate(turns):
            if role not in ROLES or not isinstance(content, str):
                raise ValueError(f"a message is (role, text) with role in {ROLES}, got {role!r}")
            expected = "user" if index % 2 == 0 else "assistant"
            if role != expected:
                raise ValueError(
                    f"message {index + 1} must be a {expected} turn (after an optional system "
                    f"message, user and assistant turns alternate), got {role!r}"
                )
        if not turns:
            raise ValueError("a conversation needs a user turn")

    @classmethod
    def pair(cls, prompt: str, response: str) -> Conversation:
        return cls((("user", prompt), ("assistant", response)))

    @classmethod
    def prompt(cls, prompt: str) -> Conversation:
        return cls((("user", prompt),))

    @property
    def ends_with_assistant(self) -> bool:
        return self.messages[-1][0] == "assistant"


@dataclass(frozen=True)
class Segment:
    text: str
    in_loss: bool


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def eos_text(tokenizer: Any) -> str:
    """The end-of-sequence token a response ends with (BERT-style vocabularies: ``[SEP]``)."""
    token = getattr(tokenizer, "eos_token", None) or getattr(tokenizer, "sep_token", None)
    if not token:
        raise ValueError("the tokenizer has no end-of-sequence token")
    return str(token)


def eos_id(tokenizer: Any) -> int | None:
    """The id of :func:`eos_text`'s token: what ends a generated response."""
    for name in ("eos_token_id", "sep_token_id"):
        value = getattr(tokenizer, name, None)
        if isinstance(value, int):
            return value
    return None


def segments(
    tokenizer: Any, conversation: Conversation, *, generation_prompt: bool = False
) -> list[Segment]:
    """The rendering of ``conversation`` cut at turn boundaries; with ``generation_prompt``,
    ending with the text that opens an assistant turn (for generation)."""
    if has_chat_template(tokenizer):
        return _template_segments(tokenizer, conversation, generation_prompt)
    return _default_segments(tokenizer, conversation, generation_prompt)


def _default_segments(
    tokenizer: Any, conversation: Conversation, generation_prompt: bool
) -> list[Segment]:
    out: list[Segment] = []
    pending = ""
    for role, content in conversation.messages:
        if role == "system":
            pending += f"{content}\n\n"
        elif role == "user":
            pending += f"{_INSTRUCTION}{content}{_RESPONSE}"
        else:
            out.append(Segment(pending, False))
            out.append(Segment(f"{content}{eos_text(tokenizer)}", True))
            pending = "\n\n"
    if conversation.ends_with_assistant:
        return out
    if not generation_prompt:  # a trailing user turn without a response: no loss on it
        return [*out, Segment(pending.removesuffix(_RESPONSE), False)]
    return [*out, Segment(pending, False)]


def _template_segments(
    tokenizer: Any, conversation: Conversation, generation_prompt: bool
) -> list[Segment]:
    messages = [{"role": role, "content": content} for role, content in conversation.messages]
    out: list[Segment] = []
    done = ""
    for end in range(1, len(messages) + 1):
        role = messages[end - 1]["role"]
        add_prompt = end < len(messages) and messages[end]["role"] == "assistant"
        if end == len(messages):
            add_prompt = generation_prompt and role != "assistant"
        text = tokenizer.apply_chat_template(
            messages[:end], tokenize=False, add_generation_prompt=add_prompt
        )
        if not text.startswith(done):
            raise ValueError("the tokenizer's chat template does not render turns incrementally")
        out.append(Segment(text[len(done) :], role == "assistant"))
        done = text
    return out


def token_ids(tokenizer: Any, parts: Sequence[Segment]) -> tuple[list[int], list[int]]:
    """Token ids of the segments, and a 0/1 loss mask over them."""
    ids: list[int] = []
    mask: list[int] = []
    for part in parts:
        tokens = tokenizer(part.text, add_special_tokens=False)["input_ids"]
        ids.extend(tokens)
        mask.extend([int(part.in_loss)] * len(tokens))
    return ids, mask


def render_ids(
    tokenizer: Any, content: Conversation | str, *, generation_prompt: bool = False
) -> tuple[list[int], list[int]]:
    """Token ids and loss mask of one sample: a conversation, or a plain text (all in the loss)."""
    if isinstance(content, str):
        return token_ids(tokenizer, [Segment(content, True)])
    return token_ids(tokenizer, segments(tokenizer, content, generation_prompt=generation_prompt))
