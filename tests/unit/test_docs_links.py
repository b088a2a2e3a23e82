"""Code comments point into docs/ as `docs/<page>.md` or `docs/<page>.md, "<Heading>"` (several headings
joined by "and"); every page and heading they name must exist. Links between the docs pages (and from
the top-level README into them) must reach an existing page and heading too."""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
# The packages whose comments must point into docs/.
SCANNED = ("gateway", "trigger_api", "shared", "herald")
# Also checked: references in tests and benchmarks (this file's own examples excepted).
ALSO_SCANNED = ("tests", "loadtest")
SOURCE_SUFFIXES = (".py", ".lua")

REFERENCE_RE = re.compile(r'docs/(?P<page>[\w-]+\.md)(?P<headings>(?:\s*(?:,|\band\b)\s*"[^"]+")*)')
QUOTED_RE = re.compile(r'"([^"]+)"')
HEADING_RE = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$")
# [text](target) where target is a relative .md path, optionally with #anchor, or a bare #anchor.
LINK_RE = re.compile(r"\]\((?P<target>(?:[\w./-]+\.md)?(?:#[\w-]+)?)\)")


@dataclass(frozen=True)
class Reference:
    where: str  # file:line of the reference
    page: str
    headings: tuple[str, ...]


def flatten(text: str) -> tuple[str, list[int]]:
    """The text with comment markers and indentation removed and lines joined by spaces, so a reference
    wrapped over several comment lines reads as one; with the offset where each line starts."""
    parts: list[str] = []
    starts: list[int] = []
    offset = 0
    for line in text.splitlines():
        stripped = line.strip()
        for marker in ("#", "--"):
            if stripped.startswith(marker):
                stripped = stripped[len(marker):].strip()
                break
        starts.append(offset)
        parts.append(stripped)
        offset += len(stripped) + 1
    return " ".join(parts), starts


def references_in(text: str, name: str) -> list[Reference]:
    flat, starts = flatten(text)
    refs = []
    for match in REFERENCE_RE.finditer(flat):
        lineno = bisect.bisect_right(starts, match.start())
        headings = tuple(QUOTED_RE.findall(match.group("headings")))
        refs.append(Reference(f"{name}:{lineno}", match.group("page"), headings))
    return refs


def scan(root: Path, packages: tuple[str, ...]) -> list[Reference]:
    refs: list[Reference] = []
    for package in packages:
        for path in sorted((root / package).rglob("*")):
            if path.suffix in SOURCE_SUFFIXES and path.is_file() and "node_modules" not in path.parts:
                refs += references_in(path.read_text(encoding="utf-8"), str(path.relative_to(root)))
    return refs


def headings_of(page: Path) -> list[str]:
    """Markdown headings outside fenced code blocks."""
    out = []
    fenced = False
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            fenced = not fenced
            continue
        match = None if fenced else HEADING_RE.match(line)
        if match:
            out.append(match.group(1))
    return out


def anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lowercased, punctuation other than '-' and '_' dropped, spaces
    to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.lower())
    return text.replace(" ", "-")


def problems(refs: list[Reference], docs: Path) -> list[str]:
    out = []
    for ref in refs:
        page = docs / ref.page
        if not page.is_file():
            out.append(f"{ref.where}: docs/{ref.page} does not exist")
            continue
        known = headings_of(page)
        out += [f'{ref.where}: docs/{ref.page} has no heading "{h}"' for h in ref.headings if h not in known]
    return out


def link_problems(page: Path, docs: Path) -> list[str]:
    out = []
    for lineno, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
        for match in LINK_RE.finditer(line):
            target = match.group("target")
            if not target:
                continue
            file_part, _, fragment = target.partition("#")
            dest = (page.parent / file_part).resolve() if file_part else page
            if not dest.is_file():
                out.append(f"{page.name}:{lineno}: {target}: no such file")
                continue
            if fragment and dest.parent == docs.resolve() and fragment not in {anchor(h) for h in headings_of(dest)}:
                out.append(f"{page.name}:{lineno}: {target}: no such heading")
    return out


def test_every_docs_reference_in_the_code_resolves() -> None:
    refs = scan(ROOT, SCANNED)
    # The scan must actually find the references (a broken pattern would find none and pass).
    assert len({r.page for r in refs}) >= 5, refs
    assert sum(len(r.headings) for r in refs) >= 10, refs
    assert problems(refs, DOCS) == []


def test_docs_references_in_tests_and_benchmarks_resolve() -> None:
    this = str(Path(__file__).resolve().relative_to(ROOT))
    refs = [r for r in scan(ROOT, ALSO_SCANNED) if not r.where.startswith(this + ":")]
    assert problems(refs, DOCS) == []


def test_links_between_docs_pages_resolve() -> None:
    pages = sorted(DOCS.glob("*.md"))
    assert pages, "docs/ has no pages"
    found = []
    for page in [*pages, ROOT / "README.md"]:
        found += link_problems(page, DOCS)
    assert found == []


def test_the_checker_reports_a_missing_page_and_a_missing_heading(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "real.md").write_text('# Real\n\n## Known heading\n\n```\n## Not a heading\n```\n', encoding="utf-8")
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "mod.py").write_text(
        '"""See docs/real.md, "Known heading" and "Missing one".\n"""\n'
        "# a comment wrapped over lines (docs/real.md, \"Known\n"
        "# heading\"), then docs/absent.md and docs/real.md, \"Not a heading\".\n",
        encoding="utf-8",
    )
    refs = scan(tmp_path, ("pkg",))
    assert sorted(problems(refs, docs)) == sorted([
        'pkg/mod.py:1: docs/real.md has no heading "Missing one"',
        "pkg/mod.py:4: docs/absent.md does not exist",
        'pkg/mod.py:4: docs/real.md has no heading "Not a heading"',
    ])
    (docs / "links.md").write_text("[ok](real.md#known-heading) [bad](real.md#nope) [gone](gone.md)\n",
                                   encoding="utf-8")
    assert link_problems(docs / "links.md", docs) == [
        "links.md:1: real.md#nope: no such heading",
        "links.md:1: gone.md: no such file",
    ]
