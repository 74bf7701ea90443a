"""README's "Project layout" names every module of the library, the tasks, the flows and the
deployments, and nothing that does not exist (issue 15: one line per folder and module)."""

from __future__ import annotations

import re

from tests.conftest import ROOT

PACKAGES = ("ctloop", "tasks", "flows", "deployments")


def _layout_block() -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Project layout", 1)[1]
    return section.split("```", 2)[1]


def _documented() -> set[str]:
    """Paths the block names: a folder line sets the parent of the indented lines below it."""
    paths, parents = set(), {}
    for line in _layout_block().splitlines():
        found = re.match(r"^( *)(\S+)", line)
        if not found or line.startswith(" " * 20):  # a description's continuation
            continue
        depth, name = len(found.group(1)) // 2, found.group(2)
        parent = parents.get(depth - 1, "") if depth else ""
        path = f"{parent}{name}"
        if name.endswith("/"):
            parents[depth] = path
        paths.add(path)
    return paths


def _modules() -> set[str]:
    return {
        p.relative_to(ROOT).as_posix()
        for package in PACKAGES
        for p in (ROOT / package).rglob("*.py")
        if p.name != "__init__.py"
    }


def test_every_module_is_in_the_layout() -> None:
    missing = _modules() - _documented()
    assert not missing, f"README's Project layout lacks {sorted(missing)}"


def test_the_layout_names_no_module_that_does_not_exist() -> None:
    named = {p for p in _documented() if p.endswith(".py") and p.split("/")[0] in PACKAGES}
    assert named <= _modules(), sorted(named - _modules())
    assert {p for p in _documented() if p.endswith("/")} >= {f"{p}/" for p in PACKAGES}
