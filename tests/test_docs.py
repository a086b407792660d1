"""The documentation map cannot rot: README.md and docs/*.md link to files and headings that
exist, every docs page is on the map, and the code names they mention are real."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest
from conftest import ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PAGE_IDS = [str(p.relative_to(ROOT)) for p in PAGES]

FENCE = re.compile(r"^```.*?^```", re.S | re.M)
INLINE_CODE = re.compile(r"`[^`\n]+`")
LINK = re.compile(r"(?<!!)\[[^\]\n]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$", re.M)


def prose(text: str) -> str:
    """The page without fenced code blocks (links and headings there are not Markdown)."""
    return FENCE.sub("", text)


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
    text = text.replace("`", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    found = set()
    for _level, heading in HEADING.findall(prose(path.read_text(encoding="utf-8"))):
        anchor = github_anchor(heading)
        count = seen.get(anchor, 0)
        seen[anchor] = count + 1
        found.add(anchor if count == 0 else f"{anchor}-{count}")
    return found


def relative_links(path: Path) -> list[str]:
    text = INLINE_CODE.sub("", prose(path.read_text(encoding="utf-8")))
    return [target for target in LINK.findall(text)
            if not re.match(r"[a-z][a-z0-9+.-]*:", target)]  # http:, https:, mailto: ...


def test_the_anchor_rule_is_githubs():
    assert github_anchor("The exact rules") == "the-exact-rules"
    assert github_anchor("What the fits say (notebook 04)") == "what-the-fits-say-notebook-04"
    assert github_anchor("Replaying the Azure LLM inference trace: `--trace-format azure`") == \
        "replaying-the-azure-llm-inference-trace---trace-format-azure"


@pytest.mark.parametrize("page", PAGES, ids=PAGE_IDS)
def test_relative_links_point_to_files_and_headings_that_exist(page):
    broken = []
    for target in relative_links(page):
        file_part, _, anchor = target.partition("#")
        destination = (page.parent / file_part).resolve() if file_part else page
        if not destination.exists():
            broken.append(f"{target}: no file {destination.relative_to(ROOT)}")
        elif anchor and destination.suffix == ".md" and anchor not in anchors(destination):
            broken.append(f"{target}: no heading with anchor #{anchor} in "
                          f"{destination.relative_to(ROOT)}")
    assert not broken, f"{page.relative_to(ROOT)}: " + "; ".join(broken)


def test_the_link_checker_sees_broken_links(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# Title\n\n## A section\n\n[ok](#a-section) [file](page.md#title) "
                    "[web](https://example.com) `[code](nowhere.md)`\n\n"
                    "```\n[fenced](nowhere.md)\n```\n[gone](missing.md) [bad](#no-such)\n")
    assert relative_links(page) == ["#a-section", "page.md#title", "missing.md", "#no-such"]
    assert anchors(page) == {"title", "a-section"}


def test_every_docs_page_is_on_the_maps():
    pages = {p.name for p in (ROOT / "docs").glob("*.md")} - {"README.md"}
    index = set(relative_links(ROOT / "docs" / "README.md"))
    readme = set(relative_links(ROOT / "README.md"))
    assert "docs/README.md" in readme
    assert not pages - index, f"docs/README.md does not link {sorted(pages - index)}"
    assert not {f"docs/{p}" for p in pages} - readme, "the README's docs map misses a page"


@pytest.mark.parametrize("page", PAGES, ids=PAGE_IDS)
def test_every_page_starts_by_saying_what_it_is_for(page):
    lines = page.read_text(encoding="utf-8").splitlines()
    assert lines[0].startswith("# ") and lines[1] == "", lines[:2]
    assert lines[2] and not lines[2].startswith(("#", "|", "`", "<", " ")), lines[2]


def _resolves(dotted: str) -> bool:
    """Whether ``apslab.x.y[.attr...]`` is a module, or an attribute reached from one."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            target = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        try:
            for name in parts[cut:]:
                target = getattr(target, name)
        except AttributeError:
            return False
        return True
    return False


@pytest.mark.parametrize("page", PAGES, ids=PAGE_IDS)
def test_named_modules_functions_and_files_exist(page):
    """Every ``apslab.…`` name and every repository path in backticks is real, so a module
    that moves cannot leave the docs describing the old layout."""
    text = page.read_text(encoding="utf-8")
    spans = [span.strip("`") for span in INLINE_CODE.findall(prose(text))]
    missing = []
    for name in {m for span in spans for m in re.findall(r"\bapslab(?:\.\w+)+", span)}:
        if not _resolves(name):
            missing.append(name)
    for span in spans:
        for path in re.findall(r"(?<![\w./-])((?:apslab|data|docs|tests|benchmarks|notebooks|"
                               r"\.ci)/[\w./-]*)", span):
            if not (ROOT / path).exists():
                missing.append(path)
    assert not missing, f"{page.relative_to(ROOT)} names what does not exist: {sorted(missing)}"


def _package_identifiers() -> set[str]:
    """Every name the package's source defines or uses, plus its module and folder names."""
    import ast

    names: set[str] = {"apslab"}
    package = ROOT / "apslab"
    for path in package.rglob("*"):
        if path.suffix not in (".py", ".c"):
            continue
        names.update(path.relative_to(package).with_suffix("").parts)
        if path.suffix == ".c":
            names.update(re.findall(r"\b(apslab_\w+)\s*\(", path.read_text(encoding="utf-8")))
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.Name):
                names.add(node.id)
            elif isinstance(node, ast.Attribute):
                names.add(node.attr)
            elif isinstance(node, ast.arg):
                names.add(node.arg)
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and \
                    node.value.isidentifier():
                names.add(node.value)  # reason codes and other names kept as strings
    return names


def test_the_architecture_page_names_only_what_the_code_has():
    """On the contributors' page every identifier in backticks (``LiveScheduler``,
    ``_EventLoop.run``, ``form_batch``...) is one the package's source really has."""
    known = _package_identifiers()
    text = prose((ROOT / "docs" / "architecture.md").read_text(encoding="utf-8"))
    unknown = set()
    for span in (s.strip("`") for s in INLINE_CODE.findall(text)):
        if not re.fullmatch(r"[A-Za-z_]\w*(\.\w+)*(\(\))?", span) or re.search(
                r"\.(py|c|json|csv|md|toml)$", span):
            continue
        unknown.update(part for part in span.removesuffix("()").split(".") if part not in known)
    assert not unknown, f"docs/architecture.md names {sorted(unknown)}, which the code lacks"
