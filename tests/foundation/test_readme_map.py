"""The README's architecture map matches the tree (issue 13): every module of gateway/, the
SDK and the load tests is named in its directory's entry, and no entry names a file that is
gone. Every docs/*.md the code and the docs cite exists.

The map's layout: an entry starts with its head at indent 0 (a top directory), 2 (a file or
a directory in it) or 4 (a directory one further down); its text goes on in lines indented
further. A file head's entry belongs to its directory."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NAME = re.compile(r"(?<![\w/.*-])(\w[\w/.-]*\.(?:py|lua|json|yaml|mjs))\b")
DOC = re.compile(r"\bdocs/[\w-]+\.md\b")


def map_entries(readme: str) -> dict[Path, str]:
    """Directory (relative to the repository) → the text of every entry belonging to it."""
    start = readme.index("## Architecture map")
    block = readme[readme.index("```\n", start) + 4:]
    block = block[:block.index("```")]
    entries: dict[Path, str] = {}
    stack: list[str] = []
    current: Path | None = None
    for line in block.splitlines():
        indent = len(line) - len(line.lstrip(" "))
        head = re.match(r"(\S+(?:, \S+)*)(?:\s{2,}|$)", line[indent:])
        if indent in (0, 2, 4) and head:
            level = indent // 2
            name = head.group(1)
            if name.endswith("/"):
                stack = [*stack[:level], name.rstrip("/")]
                current = Path(*stack)
            else:
                stack = stack[:level]
                current = Path(*stack)
        assert current is not None, f"map line outside an entry: {line!r}"
        entries[current] = entries.get(current, "") + " " + line.strip()
    return entries


def modules(top: str) -> list[Path]:
    found = []
    for path in sorted((ROOT / top).rglob("*.py")):
        rel = path.relative_to(ROOT)
        if "__pycache__" in rel.parts or "node_modules" in rel.parts:
            continue
        if path.name == "__init__.py":
            continue
        found.append(rel)
    return found


ENTRIES = map_entries((ROOT / "README.md").read_text("utf-8"))


def test_every_module_is_named_in_its_directory_entry() -> None:
    missing = []
    for rel in modules("gateway") + modules("sdk/gateway_gate") + modules("loadtests"):
        names = set(NAME.findall(ENTRIES.get(rel.parent, "")))
        if rel.name not in names:
            missing.append(str(rel))
    assert missing == []


def test_every_package_has_an_entry() -> None:
    packages = [p.parent.relative_to(ROOT) for p in sorted((ROOT / "gateway").rglob("__init__.py"))
                if "__pycache__" not in p.parts]
    assert [str(p) for p in packages if p not in ENTRIES] == []


def test_no_entry_names_a_file_that_is_gone() -> None:
    gone = []
    for directory, text in ENTRIES.items():
        base = ROOT / directory
        for name in NAME.findall(text):
            if (base / name).exists() or (ROOT / name).exists():
                continue
            if "/" not in name and base.is_dir() and any(base.rglob(name)):
                continue
            gone.append(f"{directory}: {name}")
    assert gone == []


def test_the_check_sees_a_missing_and_a_gone_module() -> None:
    """The checks can fail: a map without one module's name, or with a name that is gone."""
    readme = (ROOT / "README.md").read_text("utf-8")
    assert " lane.py " in readme
    entries = map_entries(readme.replace(" lane.py ", " lanes.py "))
    assert "lane.py" not in NAME.findall(entries[Path("gateway/web")])
    assert "lanes.py" in NAME.findall(entries[Path("gateway/web")])
    assert not (ROOT / "gateway/web/lanes.py").exists()


def test_cited_docs_exist() -> None:
    cited: dict[str, str] = {}
    for top in ("gateway", "sdk", "loadtests", "docs", "script"):
        for path in sorted((ROOT / top).rglob("*")):
            if path.suffix not in (".py", ".md", ".lua", ".yaml", "") or not path.is_file() \
                    or "__pycache__" in path.parts or "node_modules" in path.parts:
                continue
            for doc in DOC.findall(path.read_text("utf-8", errors="replace")):
                cited.setdefault(doc, str(path.relative_to(ROOT)))
    for doc in DOC.findall((ROOT / "README.md").read_text("utf-8")):
        cited.setdefault(doc, "README.md")
    assert {d: where for d, where in cited.items() if not (ROOT / d).exists()} == {}
