"""The documentation's promises: a README that fits on a screen, links that lead somewhere, an
API table that lists every route, and user documentation that describes what is rather than
which issue brought it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from service.app import create_app
from service.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
API = ROOT / "docs" / "api.md"
#: What users read: the README and docs/ (bench/README.md is the benches' own record).
USER_DOCS = [README, *sorted((ROOT / "docs").glob("*.md"))]
CONTRIBUTING = ROOT / "CONTRIBUTING.md"
#: Every page whose relative links must lead to a file (and a heading) that exists.
LINKING_DOCS = [*USER_DOCS, CONTRIBUTING, ROOT / "client" / "README.md", ROOT / "bench/README.md"]

MAX_README_LINES = 400

_FENCE = re.compile(r"^[ \t]*(```|~~~).*?^[ \t]*\1[ \t]*$", re.MULTILINE | re.DOTALL)
_CODE_SPAN = re.compile(r"`[^`\n]*`")
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
_HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t]*#*[ \t]*$", re.MULTILINE)
#: "issue 30", "Issues #9", "PR 12", "#22", "(new)": what a changelog says, not a manual.
_ISSUE_TEXT = re.compile(
    r"\b(?:[Ii]ssues?|PRs?|[Pp]ull requests?)[ \t]+#?\d+"
    r"|(?<![\w&#/])#\d{1,4}(?![\w-])"
    r"|\((?:new|NEW)\)"
)


def prose(text: str) -> str:
    """The text outside fenced code blocks (a `# comment` in a shell block is no heading)."""
    return _FENCE.sub("", text)


def anchor(heading: str) -> str:
    """GitHub's anchor of a heading: the link texts and code kept, other punctuation dropped,
    lower case, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading's anchor in a Markdown file, repeated ones numbered as GitHub does."""
    seen: dict[str, int] = {}
    found = set()
    for heading in _HEADING.findall(prose(path.read_text(encoding="utf-8"))):
        slug = anchor(heading)
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def relative_links(path: Path) -> list[str]:
    """The targets of a page's links and images that point into the repository."""
    text = _CODE_SPAN.sub("code", prose(path.read_text(encoding="utf-8")))
    return [target for target in _LINK.findall(text) if not _SCHEME.match(target)]


def broken_links(path: Path) -> list[str]:
    broken = []
    for target in relative_links(path):
        file_part, _, fragment = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        if not linked.exists():
            broken.append(f"{target}: no such file")
        elif fragment and (linked.suffix != ".md" or fragment not in anchors(linked)):
            broken.append(f"{target}: no heading with that anchor")
    return broken


def test_the_readme_fits_on_a_screen() -> None:
    lines = README.read_text(encoding="utf-8").count("\n")
    assert lines <= MAX_README_LINES, f"README.md has {lines} lines; move detail into docs/"


def test_the_readme_links_into_docs() -> None:
    linked = {target.partition("#")[0] for target in relative_links(README)}
    for page in sorted((ROOT / "docs").glob("*.md")):
        assert f"docs/{page.name}" in linked, f"README.md does not link to docs/{page.name}"


@pytest.mark.parametrize("path", LINKING_DOCS, ids=lambda path: str(path.relative_to(ROOT)))
def test_every_relative_link_resolves(path: Path) -> None:
    assert broken_links(path) == []


#: A repository path in a code span: `service/relay.py`, `tests/unit/` (`<name>` ones aside).
_REPO_PATH = re.compile(
    r"`((?:bench|client|constraints|docker|docs|examples|migrations|requirements|service|tests"
    r"|unlearning|workers)/[^`\s<>]*)`"
)


@pytest.mark.parametrize("path", LINKING_DOCS, ids=lambda path: str(path.relative_to(ROOT)))
def test_every_repository_path_named_exists(path: Path) -> None:
    """Code moves; the documentation that names a module must move with it."""
    named = _REPO_PATH.findall(path.read_text(encoding="utf-8"))
    assert [name for name in named if not (ROOT / name).exists()] == []


@pytest.mark.parametrize(
    "path", [*USER_DOCS, CONTRIBUTING], ids=lambda path: str(path.relative_to(ROOT))
)
def test_user_documentation_cites_no_issue_numbers(path: Path) -> None:
    text = _CODE_SPAN.sub("code", prose(path.read_text(encoding="utf-8")))
    assert [match.group(0) for match in _ISSUE_TEXT.finditer(text)] == []


@pytest.mark.parametrize(
    ("heading", "expected"),
    [
        ("Deployment (docker/ and docker-compose.yml)", "deployment-docker-and-docker-composeyml"),
        ("Fast passes through the service (`bench/service_passes.py`)",
         "fast-passes-through-the-service-benchservice_passespy"),
        ("Unlearning policies: exact, or approximate first",
         "unlearning-policies-exact-or-approximate-first"),
        ("The S3T engine (`unlearning/s3t/`)", "the-s3t-engine-unlearnings3t"),
    ],
)  # fmt: skip
def test_anchors_are_githubs(heading: str, expected: str) -> None:
    assert anchor(heading) == expected


def test_the_link_checker_sees_a_broken_link(tmp_path: Path) -> None:
    (tmp_path / "other.md").write_text("# A heading\n", encoding="utf-8")
    page = tmp_path / "page.md"
    page.write_text(
        "[ok](other.md#a-heading) [gone](missing.md) [bad](other.md#b-heading) [self](#top)\n"
        "```sh\n# top\n```\n[web](https://example.com) `[code](missing.md)`\n",
        encoding="utf-8",
    )
    assert broken_links(page) == [
        "missing.md: no such file",
        "other.md#b-heading: no heading with that anchor",
        "#top: no heading with that anchor",
    ]


@pytest.mark.parametrize(
    ("text", "flagged"),
    [
        ("since issue 30 the models", True),
        ("fixed in #22.", True),
        ("Issues #9 and 12", True),
        ("the class deletions (new)", True),
        ("issue one key per tenant", False),
        ("see [below](#3-retrains) or `cuda:1`", False),
        ("HTML &#123; entity", False),
    ],
)
def test_the_issue_check_flags_changelog_text(text: str, flagged: bool) -> None:
    assert bool(_ISSUE_TEXT.search(_CODE_SPAN.sub("code", text))) is flagged


def _routes_in(path: Path) -> set[str]:
    """`METHOD /path` of every route named in the first column of a page's tables, with the
    path parameters' names dropped (`/models/{id}` and `/models/{model_id}` are one route)."""
    routes = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("| `"):
            first_cell = line.split("|")[1]
            for span in re.findall(r"`((?:GET|POST|PUT|PATCH|DELETE) /[^`]*)`", first_cell):
                routes.add(re.sub(r"\{[^}]*\}", "{}", span))
    return routes


def _openapi_routes() -> set[str]:
    paths = create_app(Settings()).openapi()["paths"]
    return {
        f"{method.upper()} {re.sub(r'{[^}]*}', '{}', path)}"
        for path, operations in paths.items()
        for method in operations
    }


#: Routes for browsers that the OpenAPI document leaves out.
_NOT_IN_OPENAPI = {"GET /dashboard"}


@pytest.mark.parametrize("path", [README, API], ids=["README.md", "docs/api.md"])
def test_the_api_tables_list_every_route(path: Path) -> None:
    documented = _routes_in(path)
    assert _openapi_routes() - documented == set()
    assert documented - _openapi_routes() - _NOT_IN_OPENAPI == set()
