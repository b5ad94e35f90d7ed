"""Layers point down: a module imports only from its own layer or the layers below it.

The order (docs/architecture.md, "Layers"), from the bottom:

1. base: ``errors``, ``exception_groups``, ``metrics``, ``argtypes``, ``settings``,
   ``voice_store`` (no project imports beyond each other);
2. ``protocol``: wire formats, pure;
3. ``conversation`` (the sans-I/O core), ``voices``;
4. ``services``: clients of the STT, TTS, LLM and other services;
5. ``session``: one conversation's tasks;
6. ``web``: HTTP and WebSocket routes, process state;
7. ``testing``: simulators and harnesses (tests and the ``sim`` command use them);
8. ``engines``, ``loadtest``, ``launcher`` (and its ``supervisor``): programs on the layers below;
9. ``cli``, ``asgi``, ``__main__``: entry points.

Imports inside ``if TYPE_CHECKING:`` count too: a type that comes from above is a dependency
on the layer above all the same.
"""

from __future__ import annotations

import ast
from pathlib import Path

import unmute_trio

LAYERS: list[set[str]] = [
    {"__init__", "errors", "exception_groups", "metrics", "argtypes", "settings", "voice_store"},
    {"protocol"},
    {"conversation", "voices"},
    {"services"},
    {"session"},
    {"web"},
    {"testing"},
    {"engines", "loadtest", "launcher", "supervisor"},
    {"cli", "asgi", "__main__"},
]
RANK = {name: i for i, layer in enumerate(LAYERS) for name in layer}
PACKAGE = Path(unmute_trio.__file__).parent


def unit_of(parts: list[str]) -> str:
    """``unmute_trio.session.runner`` → ``session``; ``unmute_trio`` → ``__init__``."""
    return parts[1] if len(parts) > 1 else "__init__"


def imported_units(tree: ast.AST) -> set[str]:
    units = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "unmute_trio":
                # "from unmute_trio import metrics": the names are the units
                units.update(alias.name for alias in node.names)
            elif node.module.startswith("unmute_trio."):
                units.add(unit_of(node.module.split(".")))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("unmute_trio."):
                    units.add(unit_of(alias.name.split(".")))
    return units


def test_every_module_belongs_to_a_layer() -> None:
    units = {
        unit_of(["unmute_trio", *p.relative_to(PACKAGE).with_suffix("").parts])
        for p in PACKAGE.rglob("*.py")
    }
    assert units <= set(RANK), sorted(units - set(RANK))


def test_imports_point_down() -> None:
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = ["unmute_trio", *path.relative_to(PACKAGE).with_suffix("").parts]
        unit = unit_of(parts)
        for target in imported_units(ast.parse(path.read_text(), str(path))):
            if target in RANK and RANK[target] > RANK[unit]:
                upward.append(f"{'.'.join(parts)} ({unit}) imports {target}")
    assert upward == [], "\n".join(upward)


def test_the_check_sees_an_upward_import() -> None:
    tree = ast.parse("from unmute_trio.web.state import AppState\nfrom unmute_trio import metrics")
    assert imported_units(tree) == {"web", "metrics"}
    assert RANK["web"] > RANK["session"]


MAX_MODULE_LINES = 450  # docs/architecture.md: a module longer than this gets split


def test_no_module_is_too_long() -> None:
    long = {
        str(path.relative_to(PACKAGE)): n
        for path in PACKAGE.rglob("*.py")
        if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert long == {}, long
