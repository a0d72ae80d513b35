"""The packages depend on each other one way (docs/conventions.md).

``kubeloop`` core <- ``components``, ``pipelines``, ``serving``, ``monitoring``; ``pipelines``
composes ``components``; ``monitoring`` may use ``pipelines`` to launch runs; the CLI and the
demo (``kubeloop.cli``, ``kubeloop.demo``) sit on top and only entry points import them; no
product module imports test code. Every import counts, those inside functions too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PRODUCT = ("kubeloop", "components", "pipelines", "serving", "monitoring", "feature_repo")
TOP = ("kubeloop.cli", "kubeloop.demo")  # the command line and the demo: they may import all
ENTRY_POINTS = {"kubeloop.__main__", "monitoring.__main__"}

# package -> the product packages it may import (besides itself and the kubeloop core)
ALLOWED = {
    "kubeloop": set(),
    "components": {"feature_repo"},
    "pipelines": {"components"},
    "serving": set(),
    "monitoring": {"pipelines"},
    "feature_repo": set(),
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts)


def imports(path: Path) -> set[str]:
    """Every module ``path`` imports (absolute names; relative imports resolved)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module_name(path).rsplit(".", 1)[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1]
                    + ([base] if base else [])
                )
            out.add(base)
            out.update(f"{base}.{alias.name}" for alias in node.names)
    return out


def product_modules() -> dict[str, set[str]]:
    graph = {}
    for top in PRODUCT:
        for path in sorted((REPO / top).rglob("*.py")):
            graph[module_name(path)] = imports(path)
    return graph


def within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def is_top(name: str) -> bool:
    return any(within(name, t) for t in TOP) or name in ENTRY_POINTS


def violations(graph: dict[str, set[str]]) -> list[str]:
    found = []
    for module, targets in graph.items():
        package = module.split(".")[0]
        for target in sorted(targets):
            root = target.split(".")[0]
            if root == "tests" or root == "bench":
                found.append(f"{module} imports test or benchmark code {target}")
            elif root not in PRODUCT or is_top(module):
                continue
            elif is_top(target):
                found.append(f"{module} imports the CLI or the demo ({target})")
            elif root == "kubeloop" and package != "kubeloop":
                continue  # the core serves everyone
            elif root != package and root not in ALLOWED[package]:
                found.append(f"{module} imports {target}: {package} may not depend on {root}")
    return found


def test_dependencies_point_one_way_towards_the_core() -> None:
    assert violations(product_modules()) == []


@pytest.mark.parametrize(
    ("module", "target", "why"),
    [
        ("kubeloop.spec", "serving.app", "kubeloop may not depend on serving"),
        ("serving.app", "monitoring.job", "serving may not depend on monitoring"),
        ("pipelines.runner", "monitoring.job", "pipelines may not depend on monitoring"),
        ("monitoring.job", "kubeloop.cli.support", "imports the CLI or the demo"),
        ("serving.app", "tests.utils.serving", "imports test or benchmark code"),
    ],
)
def test_a_wrong_way_import_is_reported(module: str, target: str, why: str) -> None:
    [message] = violations({module: {target}})
    assert why in message


def test_test_helpers_are_not_in_the_product() -> None:
    assert not [p for top in PRODUCT for p in (REPO / top).rglob("testing.py")]
