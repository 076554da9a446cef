"""The README starts with the two commands and documents every setting."""

from __future__ import annotations

from pathlib import Path

from service.settings import Settings

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_starts_with_the_two_commands() -> None:
    first_block = README.split("```")[1]
    assert "make run" in first_block and "make test" in first_block


def test_every_setting_is_documented() -> None:
    for name in Settings.model_fields:
        assert f"`UNLEARN_{name.upper()}`" in README, name
