"""The documentation's references resolve: every repository path the README and docs/ name in
backticks exists, and every "README, "<section>"" in the repository names a section the README
has. The README's measured history moved to docs/ on 2026-12-07; these keep the two in step.

    python -m pytest -q tests/test_docs.py
"""

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# folders of committed code and text (reports/, models/ and data/ are pipeline outputs)
ROOTS = ("pgrpo/", "benchmarks/", "configs/", "docs/", "tests/", "flows/", "tasks/", "scripts/",
         "examples/")
BACKTICKED = re.compile(r"`([^`\s]+)`")
# the top-level README only: a README under a folder is written with its path ("../README.md")
README_SECTION = re.compile(r"(?<![/\w.])README(?:\.md)?,? (?:section )?\(?\"([^\"]+)\"")


def named_paths(text: str) -> list[str]:
    """Repository paths named in backticks; a test id's `::name` and trailing punctuation
    dropped, placeholders (`seed<s>`, globs, `$VARS`) skipped."""
    out = []
    for token in BACKTICKED.findall(text):
        path = token.split("::")[0].rstrip(".,;:)")
        if path.startswith(ROOTS) and not any(c in path for c in "<>*{}$"):
            out.append(path)
    return out


def readme_sections(text: str) -> list[str]:
    """Its headings and the bold leads that open its paragraphs ("**MLflow.**")."""
    return (re.findall(r"^#+ (.+)$", text, re.MULTILINE)
            + re.findall(r"^\*\*(.+?)\*\*", text, re.MULTILINE))


def test_every_path_the_docs_name_exists():
    pages = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    missing = [f"{page.relative_to(REPO)}: {path}" for page in pages
               for path in named_paths(page.read_text()) if not (REPO / path).exists()]
    assert not missing, "named but not in the repository:\n" + "\n".join(missing)


def test_every_readme_section_named_elsewhere_exists():
    sections = readme_sections((REPO / "README.md").read_text())
    files = subprocess.run(["git", "ls-files", "*.py", "*.md", "*.yaml", "*.sh", "*.toml"],
                           cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    dangling = [f"{name}: README, \"{section}\""
                for name in files if (REPO / name).is_file() and name != "tests/test_docs.py"
                for section in README_SECTION.findall((REPO / name).read_text(errors="replace"))
                if not any(title.startswith(section) for title in sections)]
    assert not dangling, "README sections that do not exist (moved to docs/?):\n" + "\n".join(dangling)


def test_the_checks_see_a_missing_path_and_a_missing_section():
    assert named_paths("see `docs/nowhere.md`, `tests/core/test_loss.py::test_x` and "
                       "`models/compare/seed<s>/`") == ["docs/nowhere.md", "tests/core/test_loss.py"]
    assert README_SECTION.findall('(README, "Speed"), (README, section "GPU") and '
                                  '(`../README.md`, "Pre-registered")') == ["Speed", "GPU"]
    assert readme_sections("# T\n\n## Speed\n**MLflow.** text\n") == ["T", "Speed", "MLflow."]
