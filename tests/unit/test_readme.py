"""The README starts with the two commands; docs/ documents every setting and every method."""

from __future__ import annotations

import re
from pathlib import Path

from service.settings import Settings
from unlearning.approx import registry

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")
#: The settings table: one row per `UNLEARN_*` setting.
CONFIGURATION = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
#: The table of approximate methods, between the registry's markers.
METHODS = (ROOT / "docs" / "unlearning-methods.md").read_text(encoding="utf-8")


def test_starts_with_the_two_commands() -> None:
    first_block = README.split("```")[1]
    assert "make run" in first_block and "make test" in first_block


def test_every_setting_is_a_row_of_the_settings_table() -> None:
    rows = set(re.findall(r"^\| `UNLEARN_([A-Z0-9_]+)` \|", CONFIGURATION, re.MULTILINE))
    settings = {name.upper() for name in Settings.model_fields}
    assert settings - rows == set(), "settings missing from docs/configuration.md"
    assert rows - settings == set(), "rows of docs/configuration.md that name no setting"


def test_the_table_of_methods_is_the_registry() -> None:
    """Regenerate it with
    `python -m unlearning.approx.registry --readme docs/unlearning-methods.md`."""
    assert registry.table_in(METHODS) == registry.markdown_table()


def test_the_table_is_replaced_between_its_markers() -> None:
    text = f"a\n{registry.TABLE_BEGIN} (note) -->\nold\n{registry.TABLE_END}\nb\n"
    new = registry.with_table(text, "| x |\n")
    assert new == f"a\n{registry.TABLE_BEGIN} (note) -->\n| x |\n{registry.TABLE_END}\nb\n"
    assert registry.table_in(new) == "| x |\n"
