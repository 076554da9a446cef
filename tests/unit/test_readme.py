"""The README starts with the two commands and documents every setting."""

from __future__ import annotations

from pathlib import Path

from service.settings import Settings
from unlearning.approx import registry

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_starts_with_the_two_commands() -> None:
    first_block = README.split("```")[1]
    assert "make run" in first_block and "make test" in first_block


def test_every_setting_is_documented() -> None:
    for name in Settings.model_fields:
        assert f"`UNLEARN_{name.upper()}`" in README, name


def test_the_table_of_methods_is_the_registry() -> None:
    """Regenerate it with `python -m unlearning.approx.registry --readme README.md`."""
    assert registry.table_in(README) == registry.markdown_table()


def test_the_table_is_replaced_between_its_markers() -> None:
    text = f"a\n{registry.TABLE_BEGIN} (note) -->\nold\n{registry.TABLE_END}\nb\n"
    new = registry.with_table(text, "| x |\n")
    assert new == f"a\n{registry.TABLE_BEGIN} (note) -->\n| x |\n{registry.TABLE_END}\nb\n"
    assert registry.table_in(new) == "| x |\n"
