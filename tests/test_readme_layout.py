"""The README's layout section matches the tree: every module of relam/ and baselines/, every
sub-package, every script and every top-level folder is named there, and every ``*.py`` it names
exists."""
from __future__ import annotations

import re

from relam.cache import REPO_ROOT

FOLDERS = ("relam", "baselines", "experiments", "reproductions", "tests", "benchmarks", "scripts")


def _layout_block() -> str:
    text = (REPO_ROOT / "README.md").read_text()
    section = text[text.index("## Layout\n"):]
    start = section.index("```\n") + 4
    return section[start:section.index("```\n", start)]


def _tree_files(pkg: str, pattern: str) -> list:
    return [p for p in (REPO_ROOT / pkg).rglob(pattern) if "__pycache__" not in p.parts]


def test_the_layout_names_every_module_package_and_folder():
    block = _layout_block()
    lines = block.splitlines()
    missing = [f"{f}/" for f in FOLDERS if (REPO_ROOT / f).is_dir() and not any(ln.startswith(f"{f}/ ") for ln in lines)]
    for pkg in ("relam", "baselines"):
        for p in _tree_files(pkg, "*.py"):
            if p.name != "__init__.py" and not re.search(rf"(?<![\w.]){re.escape(p.name)}\b", block):
                missing.append(str(p.relative_to(REPO_ROOT)))
        for d in (REPO_ROOT / pkg).iterdir():
            if (d / "__init__.py").is_file() and f"  {d.name}/ " not in block:
                missing.append(f"{pkg}/{d.name}/")
    missing += [f"scripts/{p.name}" for p in (REPO_ROOT / "scripts").glob("*.sh") if p.name not in block]
    assert not missing, f"README.md's layout section does not name: {missing}"


def test_every_module_the_layout_names_exists():
    names = {p.name for pkg in FOLDERS if (REPO_ROOT / pkg).is_dir() for p in _tree_files(pkg, "*.py")}
    named = set(re.findall(r"(?<![\w./])([a-z_]+\.py)\b", _layout_block()))
    assert named, "no module named in the layout section"
    assert not named - names, f"README.md's layout section names modules that do not exist: {sorted(named - names)}"
