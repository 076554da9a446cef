"""bench/llm_data.py: AG News cleaning, instruction pairs, subjects and planted canaries."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from unlearning.evaluation.memorization import CANARY_PREFIX, canary_secret

BENCH = Path(__file__).resolve().parents[2] / "bench" / "llm_data.py"


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_llm_data", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


data = _bench()

TEXTS = [f"story {i} " + " ".join(f"w{i}x{j}" for j in range(20)) for i in range(60)]
LABELS = ["World", "Sports", "Business", "Sci/Tech"] * 15


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("It #39;s over. I #39;m leaving.", "It's over. I'm leaving."),
        ("for  #36;41.1 million", "for $41.1 million"),
        ("said  quot;the end quot; today", 'said "the end" today'),
        ('Co. &lt;A HREF="x"&gt;KMB.N&lt;/A&gt; said', "Co. KMB.N said"),
        ("Won954bn (\\$828m) and\\the rest", "Won954bn ($828m) and the rest"),
        ("AT&T and Johnson & Johnson", "AT&T and Johnson & Johnson"),
        ("a #1 pick; weights; fine", "a #1 pick; weights; fine"),
    ],
)
def test_clean_text_repairs_the_corpus_escapes(raw: str, clean: str) -> None:
    assert data.clean_text(raw) == clean


def test_read_agnews_cleans_and_skips_bad_rows(tmp_path: Path) -> None:
    path = tmp_path / "train.tsv"
    path.write_text("It #39;s fine\tWorld\nonly one field\n&lt;br&gt;\tSports\nok\tBusiness\n")
    assert data.read_agnews(path) == [("It's fine", "World"), ("ok", "Business")]


def test_instruction_pairs_continue_a_story() -> None:
    pairs = data.instruction_pairs(TEXTS, LABELS, 10, seed=0)
    assert len(pairs) == 10
    for prompt, response in pairs:
        label, start = prompt.removeprefix("Continue this ").split(" news story: ")
        index = int(start.split()[1])
        assert label == LABELS[index]
        words = TEXTS[index].split()
        assert start == " ".join(words[: data.PROMPT_WORDS])
        assert response == " ".join(words[data.PROMPT_WORDS : data.PROMPT_WORDS + 10])
    assert len({prompt for prompt, _ in pairs}) == 10  # distinct texts


def test_instruction_pairs_are_seeded() -> None:
    first = data.instruction_pairs(TEXTS, LABELS, 10, seed=0)
    assert first == data.instruction_pairs(TEXTS, LABELS, 10, seed=0)
    assert first != data.instruction_pairs(TEXTS, LABELS, 10, seed=1)


def test_instruction_pairs_skip_short_and_long_texts() -> None:
    texts = ["too short", *TEXTS[:5]]
    pairs = data.instruction_pairs(texts, LABELS[:6], 5, seed=0)
    assert all("too short" not in prompt for prompt, _ in pairs)
    with pytest.raises(ValueError, match="make a pair"):
        data.instruction_pairs(texts, LABELS[:6], 6, seed=0)
    # a token counter drops the pairs over the budget: here, those of even-numbered stories

    def story(text: str) -> int:
        return int(text.split("story: story ")[1].split()[0])

    def count(prompt: str, response: str) -> int:
        return 49 if story(prompt) % 2 == 0 else 48

    kept = data.instruction_pairs(TEXTS, LABELS, 30, seed=0, token_count=count)
    assert all(story(prompt) % 2 == 1 for prompt, _ in kept)


def test_subjects_partition_the_pairs() -> None:
    pairs = data.instruction_pairs(TEXTS, LABELS, 50, seed=0)
    dealt = data.assign_subjects(pairs, 7, seed=0)
    assert list(dealt) == [f"subject-{i:03d}" for i in range(7)]
    assert sorted(p for ps in dealt.values() for p in ps) == sorted(pairs)
    assert {len(ps) for ps in dealt.values()} <= {7, 8}


def test_canaries_are_planted_in_copies_of_the_chosen_subjects_only() -> None:
    dealt = data.assign_subjects(data.instruction_pairs(TEXTS, LABELS, 60, seed=0), 6, seed=0)
    chosen = ["subject-001", "subject-004"]
    planted = data.plant_canaries(dealt, chosen, 2, 3, seed=5)
    assert list(planted.canaries) == chosen
    every = [c for cs in planted.canaries.values() for c in cs]
    assert len(set(every)) == 4
    for subject, pairs in planted.pairs_by_subject.items():
        original = dealt[subject]
        assert len(pairs) == len(original)
        changed = [(new, old) for new, old in zip(pairs, original, strict=True) if new != old]
        if subject not in chosen:
            assert not changed
            continue
        assert len(changed) == 6
        for canary in planted.canaries[subject]:
            holding = [new for new, _ in changed if new[1].endswith(canary)]
            assert len(holding) == 3
        for (prompt, response), (old_prompt, old_response) in changed:
            assert prompt == old_prompt
            kept = response.split(f". {CANARY_PREFIX}")[0]
            assert old_response.startswith(kept)
            assert len(canary_secret(response[len(kept) + 2 :]).split()) == 6
    assert dealt["subject-001"] != planted.pairs_by_subject["subject-001"]  # a copy, input kept
    again = data.plant_canaries(dealt, chosen, 2, 3, seed=5)
    assert again == planted


def test_plant_canaries_refuses_what_it_cannot_do() -> None:
    dealt = data.assign_subjects(data.instruction_pairs(TEXTS, LABELS, 20, seed=0), 4, seed=0)
    with pytest.raises(ValueError, match="needed"):
        data.plant_canaries(dealt, ["subject-000"], 2, 3, seed=0)
    with pytest.raises(ValueError, match="unknown"):
        data.plant_canaries(dealt, ["nobody"], 1, 1, seed=0)
