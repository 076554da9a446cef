"""Instruction data for the LLM benchmark, built from the AG News rows the project ships.

- :func:`read_agnews`: ``text<TAB>label`` rows with the corpus' mangled HTML repaired
  (:func:`clean_text`).
- :func:`instruction_pairs`: ``(prompt, response)`` pairs that ask the model to continue a news
  story: ``"Continue this Sports news story: <first 6 words>"`` -> ``"<the next 10 words>"``.
  Short on purpose: prompt and response together come to about 38 tokens of the benchmark's
  base tokenizer (``bench/llm_base.py``), about 58 in the Alpaca-style template of
  ``unlearning.families.chat``; given a token counter, pairs over a budget are skipped.
- :func:`assign_subjects`: the pairs dealt to data subjects (the unit a deletion removes).
- :func:`plant_canaries`: random canaries (:mod:`unlearning.evaluation.memorization`'s format)
  written into some responses of chosen subjects, what the benchmark measures memorization of.

Everything is deterministic in its ``seed``.
"""

from __future__ import annotations

import csv
import html
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from unlearning.evaluation.memorization import canary_space_size, random_canary

Pair = tuple[str, str]

PROMPT = "Continue this {label} news story: {start}"
PROMPT_WORDS = 6
RESPONSE_WORDS = 10
MAX_TOKENS = 48
KEPT_WORDS = 4  # words of a response kept before a planted canary

# AG News replaced each "&" of an HTML entity with a space (" #39;" for "&#39;", " quot;" for
# "&quot;"); some entities survived intact ("&lt;A HREF=...&gt;"), and "\" stands for a line
# break ("\$" for "$").
_MANGLED_ENTITY = re.compile(r" (#\d+|quot|amp|lt|gt|hellip|nbsp);")
_TAG = re.compile(r"<[^>]*>")
_SPACES = re.compile(r"\s+")


def clean_text(text: str) -> str:
    """One AG News text as readable prose: entities decoded, HTML tags and line-break
    backslashes dropped, whitespace collapsed (``"It #39;s"`` -> ``"It's"``)."""
    text = html.unescape(_MANGLED_ENTITY.sub(r"&\1;", text))
    text = _TAG.sub(" ", text).replace("\\$", "$").replace("\\", " ")
    return _SPACES.sub(" ", text).strip()


def read_agnews(path: Path) -> list[tuple[str, str]]:
    """The ``(text, label)`` rows of an AG News split (``text<TAB>label``), texts cleaned, in
    file order; rows that are not two fields or whose text is empty after cleaning are
    skipped."""
    with path.open(newline="", encoding="utf-8") as handle:
        rows = [
            (clean_text(row[0]), row[1])
            for row in csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
            if len(row) == 2
        ]
    return [(text, label) for text, label in rows if text]


def instruction_pairs(
    texts: Sequence[str],
    labels: Sequence[str],
    n: int,
    seed: int,
    *,
    prompt_words: int = PROMPT_WORDS,
    response_words: int = RESPONSE_WORDS,
    token_count: Callable[[str, str], int] | None = None,
    max_tokens: int = MAX_TOKENS,
) -> list[Pair]:
    """``n`` story-continuation pairs from distinct texts, chosen by a seeded shuffle.

    The prompt names the text's label and quotes its first ``prompt_words`` words; the
    response is the next ``response_words`` words (fewer where the text ends first, at least
    half of them: shorter texts are skipped). With ``token_count`` (a pair's length in tokens,
    rendered as the caller trains on it: a chat template adds about 20 tokens of the base
    tokenizer), a pair counting more than ``max_tokens`` is skipped too. Raises when fewer than
    ``n`` texts qualify.
    """
    if len(texts) != len(labels):
        raise ValueError("one label per text")
    if n < 0 or prompt_words < 1 or response_words < 1:
        raise ValueError("`n` must be >= 0 and the word counts >= 1")
    order = np.random.default_rng(seed).permutation(len(texts))
    minimum = prompt_words + max(1, response_words // 2)
    pairs: list[Pair] = []
    for index in order:
        if len(pairs) == n:
            break
        words = texts[int(index)].split()
        if len(words) < minimum:
            continue
        start = " ".join(words[:prompt_words])
        response = " ".join(words[prompt_words : prompt_words + response_words])
        prompt = PROMPT.format(label=labels[int(index)], start=start)
        if token_count is not None and token_count(prompt, response) > max_tokens:
            continue
        pairs.append((prompt, response))
    if len(pairs) < n:
        raise ValueError(f"only {len(pairs)} texts make a pair; {n} asked")
    return pairs


def subject_id(index: int) -> str:
    """The name of the ``index``-th subject: ``subject-007``."""
    return f"subject-{index:03d}"


def assign_subjects(pairs: Sequence[Pair], subjects: int, seed: int) -> dict[str, list[Pair]]:
    """The pairs dealt round-robin, after a seeded shuffle, to ``subjects`` subjects
    (:func:`subject_id`): sizes differ by at most one."""
    if subjects < 1 or subjects > len(pairs):
        raise ValueError("need between 1 subject and one subject per pair")
    order = np.random.default_rng(seed).permutation(len(pairs))
    dealt: dict[str, list[Pair]] = {subject_id(i): [] for i in range(subjects)}
    for position, index in enumerate(order):
        dealt[subject_id(position % subjects)].append(pairs[int(index)])
    return dealt


@dataclass(frozen=True)
class Planted:
    """The pairs with canaries written in, and the canaries of each chosen subject."""

    pairs_by_subject: dict[str, list[Pair]]
    canaries: dict[str, list[str]]


def with_canary(pair: Pair, canary: str, kept_words: int = KEPT_WORDS) -> Pair:
    """``pair`` with its response cut to ``kept_words`` words and ``canary`` appended as a
    sentence: ``"Shares of Apple rose. my secret code is 4 8 1 9 3 7"`` (kept short, so a pair
    with a canary is no longer than one without)."""
    prompt, response = pair
    kept = " ".join(response.split()[:kept_words]).rstrip(".")
    return prompt, f"{kept}. {canary}" if kept else canary


def plant_canaries(
    pairs_by_subject: Mapping[str, Sequence[Pair]],
    subjects: Sequence[str],
    canary_per_subject: int,
    copies: int,
    seed: int,
    *,
    digits: int = 6,
) -> Planted:
    """Plant ``canary_per_subject`` distinct random canaries in each of ``subjects``, each canary
    in ``copies`` of that subject's responses (distinct pairs, chosen by a seeded draw; see
    :func:`with_canary`). Other subjects' pairs are copied unchanged; the input is not modified.

    The canaries are :func:`unlearning.evaluation.memorization.random_canary` texts of
    ``digits`` digits, all distinct. Raises when a subject has fewer than
    ``canary_per_subject * copies`` pairs.
    """
    if canary_per_subject < 1 or copies < 1:
        raise ValueError("`canary_per_subject` and `copies` must be at least 1")
    if len(set(subjects)) != len(subjects):
        raise ValueError("each subject once")
    if len(subjects) * canary_per_subject > canary_space_size(digits):
        raise ValueError(f"more canaries than {digits}-digit secrets")
    rng = np.random.default_rng(seed)
    planted = {subject: list(pairs) for subject, pairs in pairs_by_subject.items()}
    canaries: dict[str, list[str]] = {}
    drawn: set[str] = set()
    for subject in subjects:
        if subject not in planted:
            raise ValueError(f"unknown subject {subject!r}")
        pairs = planted[subject]
        needed = canary_per_subject * copies
        if len(pairs) < needed:
            raise ValueError(f"{subject} has {len(pairs)} pairs; {needed} are needed")
        targets = rng.choice(len(pairs), size=needed, replace=False)
        canaries[subject] = []
        for c in range(canary_per_subject):
            text = random_canary(rng, digits)
            while text in drawn:
                text = random_canary(rng, digits)
            drawn.add(text)
            canaries[subject].append(text)
            for index in targets[c * copies : (c + 1) * copies]:
                pairs[int(index)] = with_canary(pairs[int(index)], text)
    return Planted(pairs_by_subject=planted, canaries=canaries)
