"""Every package says what it offers, and nothing reaches past it.

- every module of the source tree declares ``__all__``; each name in it exists, and each
  class or function the module itself defines under a public name is in it;
- a name imported from another package is in that package's (or module's) ``__all__``;
- a private module (``_name``) is imported only from inside its own package.

The import rules read the source, so they hold for lazy imports inside functions too.
"""

from __future__ import annotations

import ast
import importlib
import inspect
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: The source packages, from the top layer down (import-linter checks the layers).
PACKAGES = ("tools", "chaos", "adapters", "coordinator", "participant_sdk", "compose", "twopc_core")


@dataclass(frozen=True)
class Module:
    name: str
    path: Path

    @property
    def package(self) -> str:
        """The package this module belongs to (itself, for a package's ``__init__``)."""
        return self.name if self.path.name == "__init__.py" else self.name.rpartition(".")[0]


@cache
def modules() -> tuple[Module, ...]:
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if path.name == "__main__.py":
                continue  # a script: `python -m` runs it, nothing imports it
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found.append(Module(name, path))
    return tuple(found)


@cache
def by_name() -> dict[str, Module]:
    return {m.name: m for m in modules()}


def tree(module: Module) -> ast.Module:
    return ast.parse(module.path.read_text(), str(module.path))


def declared_all(module: Module) -> list[str] | None:
    for node in tree(module).body:
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        else:
            continue
        if any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets):
            return list(ast.literal_eval(value))
    return None


def imports(module: Module) -> list[tuple[str, str | None, int]]:
    """``(imported module, imported name or None, line)`` for every first-party import."""
    found: list[tuple[str, str | None, int]] = []
    for node in ast.walk(tree(module)):
        if isinstance(node, ast.Import):
            found.extend((alias.name, None, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.extend((node.module, alias.name, node.lineno) for alias in node.names)
    return [(name, item, line) for name, item, line in found if name.split(".")[0] in PACKAGES]


def private_owner(dotted: str) -> str | None:
    """The package a private module belongs to, if ``dotted`` passes through one."""
    parts = dotted.split(".")
    for i, part in enumerate(parts):
        if part.startswith("_") and not part.startswith("__"):
            return ".".join(parts[:i])
    return None


def inside(module: Module, package: str) -> bool:
    return module.name == package or module.name.startswith(package + ".")


ids = [m.name for m in modules()]


@pytest.mark.parametrize("module", modules(), ids=ids)
def test_every_module_declares_all(module: Module) -> None:
    assert declared_all(module) is not None, f"{module.path.relative_to(ROOT)} has no __all__"


@pytest.mark.parametrize("module", modules(), ids=ids)
def test_every_name_in_all_exists_and_every_public_definition_is_in_it(module: Module) -> None:
    declared = declared_all(module) or []
    assert len(declared) == len(set(declared)), f"{module.name}.__all__ names something twice"
    loaded = importlib.import_module(module.name)
    missing = [name for name in declared if not hasattr(loaded, name)]
    assert not missing, f"{module.name}.__all__ names what it does not have: {missing}"
    defined_here = [
        name
        for name, value in vars(loaded).items()
        if not name.startswith("_")
        and (inspect.isclass(value) or inspect.isfunction(value))
        and value.__module__ == module.name
    ]
    unlisted = sorted(set(defined_here) - set(declared))
    assert not unlisted, f"{module.name} defines {unlisted} publicly but leaves them out of __all__"


def test_no_module_imports_a_private_module_of_another_package() -> None:
    offences = []
    for module in modules():
        for imported, item, line in imports(module):
            for dotted in (imported, f"{imported}.{item}" if item else imported):
                owner = private_owner(dotted)
                if owner is not None and not inside(module, owner):
                    offences.append(f"{module.path.relative_to(ROOT)}:{line} imports {dotted}")
    assert not offences, "private modules imported from outside their package:\n" + "\n".join(sorted(set(offences)))


def test_names_taken_from_another_package_are_in_its_all() -> None:
    offences = []
    for module in modules():
        for imported, item, line in imports(module):
            source = by_name().get(imported)
            if source is None or item is None or f"{imported}.{item}" in by_name():
                continue  # not a module of ours, or a submodule imported by name
            if inside(module, source.package):
                continue  # a package's own modules share more than its surface
            if item not in (declared_all(source) or []):
                offences.append(f"{module.path.relative_to(ROOT)}:{line} takes {item} from {imported}")
    assert not offences, "names imported past a package's __all__:\n" + "\n".join(sorted(offences))


def test_the_checks_see_the_whole_source_tree() -> None:
    names = by_name()
    assert {"coordinator.engine", "participant_sdk", "twopc_core.protocol", "tools.cli"} <= set(names)
    assert private_owner("coordinator.engine._machine") == "coordinator.engine"
    assert private_owner("coordinator.engine") is None
