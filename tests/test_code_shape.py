"""The code's shape: no module over 400 lines, no function over 60 lines unless a line of its
docstring starts with "Long because" (the reason), and no bench or transform module imports
another module's private name.

Every module under ``ecom_stream/`` is parsed with ``ast``; a function's length runs from its
``def`` line to its last line (decorators not counted, docstring and comments counted).
"""

from __future__ import annotations

import ast
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import REPO

PACKAGE = REPO / "ecom_stream"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
REASON = "Long because"

# Where no module may import another module's private (underscore) name.
NO_PRIVATE_IMPORTS = ("tools", "transform")


def modules(root: Path) -> Iterator[tuple[str, str]]:
    """(path relative to ``root``, source) of every Python module under ``root``."""
    for path in sorted(root.rglob("*.py")):
        yield path.relative_to(root).as_posix(), path.read_text(encoding="utf-8")


def functions(tree: ast.AST, prefix: str = "") -> Iterator[tuple[str, ast.AST]]:
    """(qualified name, node) of every function and method, nested ones included."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield prefix + node.name, node
            yield from functions(node, f"{prefix}{node.name}.<locals>.")
        elif isinstance(node, ast.ClassDef):
            yield from functions(node, f"{prefix}{node.name}.")
        else:
            yield from functions(node, prefix)


def has_reason(node: ast.AST) -> bool:
    """Whether the function's docstring has a line starting with "Long because"."""
    assert isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    doc = ast.get_docstring(node) or ""
    return any(line.strip().startswith(REASON) for line in doc.splitlines())


def long_modules(root: Path) -> dict[str, int]:
    """Modules over ``MAX_MODULE_LINES`` lines, with their line counts."""
    sizes = {rel: len(source.splitlines()) for rel, source in modules(root)}
    return {rel: n for rel, n in sizes.items() if n > MAX_MODULE_LINES}


def long_functions(root: Path) -> dict[str, int]:
    """``module:qualname`` of functions over ``MAX_FUNCTION_LINES`` lines without a reason."""
    out = {}
    for rel, source in modules(root):
        for name, node in functions(ast.parse(source, filename=rel)):
            assert isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            if length > MAX_FUNCTION_LINES and not has_reason(node):
                out[f"{rel}:{name}"] = length
    return out


def private_imports(root: Path, folders: tuple[str, ...]) -> list[str]:
    """``module: from X import _name`` lines of modules in ``folders`` that take another
    module's private name (dunders such as ``__version__`` are not private)."""
    out = []
    for rel, source in modules(root):
        if not rel.startswith(tuple(f"{f}/" for f in folders)):
            continue
        for node in ast.walk(ast.parse(source, filename=rel)):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(root.name):
                for alias in node.names:
                    if alias.name.startswith("_") and not alias.name.startswith("__"):
                        out.append(f"{rel}: from {node.module} import {alias.name}")
    return out


# -- the package -----------------------------------------------------------------------------
def test_no_module_is_over_400_lines() -> None:
    over = long_modules(PACKAGE)
    assert not over, f"modules over {MAX_MODULE_LINES} lines (split them): {over}"


def test_no_function_is_over_60_lines_without_a_reason() -> None:
    over = long_functions(PACKAGE)
    assert not over, (
        f"functions over {MAX_FUNCTION_LINES} lines (split them, or give a one-line reason in "
        f"the docstring starting {REASON!r}): {over}"
    )


def test_no_module_imports_another_modules_private_name() -> None:
    found = private_imports(PACKAGE, NO_PRIVATE_IMPORTS)
    assert not found, f"make these names public in the module that owns them: {found}"


# -- the checks themselves -------------------------------------------------------------------
def _function(name: str, body_lines: int, doc: str = "A function.") -> str:
    body = "".join(f"    x{i} = {i}\n" for i in range(body_lines))
    return f'def {name}() -> None:\n    """{doc}"""\n{body}\n\n'


@pytest.mark.parametrize("lines", [400, 401])
def test_a_module_over_400_lines_is_found(tmp_path: Path, lines: int) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "big.py").write_text("x = 1\n" * lines)
    assert long_modules(tmp_path) == ({"pkg/big.py": lines} if lines > 400 else {})


def test_a_long_function_needs_a_reason(tmp_path: Path) -> None:
    source = (
        _function("fits", 58)  # def + docstring + 58 lines = 60
        + _function("too_long", 59)
        + _function("explained", 80, "Explained.\n\n    Long because it says so.")
        + "class K:\n" + textwrap.indent(_function("method", 70), "    ")
    )
    (tmp_path / "mod.py").write_text(source)
    assert long_functions(tmp_path) == {"mod.py:too_long": 61, "mod.py:K.method": 72}


def test_private_imports_are_found(tmp_path: Path) -> None:
    (tmp_path / "tools").mkdir()
    (tmp_path / "tools" / "a.py").write_text(
        f"from {tmp_path.name}.tools.b import _helper, public, __version__\n"
    )
    found = private_imports(tmp_path, ("tools",))
    assert found == [f"tools/a.py: from {tmp_path.name}.tools.b import _helper"]


# -- data flows one way ----------------------------------------------------------------------
# The stages in the order data (and imports) flow: a module may import from its own stage and
# the stages above it, never from one below (the README's Development section maps them).
STAGES = (
    "errors", "contract", "config", "logs", "transform", "quality", "storage", "sources",
    "engine", "service", "api", "dashboard", "testing", "tools", "cli",
)  # fmt: skip


def upward_imports(root: Path) -> list[str]:
    """``module -> imported module`` for every import of a stage below the module's own."""
    found = []
    for rel, source in modules(root):
        stage = rel.split("/")[0].removesuffix(".py")
        if stage not in STAGES:
            continue
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            for name in names:
                parts = name.split(".")
                if parts[0] != "ecom_stream" or len(parts) < 2 or parts[1] not in STAGES:
                    continue
                if STAGES.index(parts[1]) > STAGES.index(stage):
                    found.append(f"{rel} -> {name}")
    return found


def test_imports_flow_one_way() -> None:
    found = upward_imports(PACKAGE)
    assert not found, f"these modules import a later stage (move the code or the name): {found}"


def test_an_upward_import_is_found(tmp_path: Path) -> None:
    (tmp_path / "transform").mkdir()
    (tmp_path / "transform" / "x.py").write_text("from ecom_stream.engine import pipeline\n")
    (tmp_path / "engine").mkdir()
    (tmp_path / "engine" / "y.py").write_text("import ecom_stream.transform.parse\n")
    assert upward_imports(tmp_path) == ["transform/x.py -> ecom_stream.engine"]


# -- transform/ is pure ----------------------------------------------------------------------
FILE_CALLS = {"read_bytes", "read_text", "write_bytes", "write_text", "iterdir", "exists",
              "stat", "lstat", "unlink", "mkdir"}  # DataFrame.rename is not a file call
PURE_OS = {"fsencode", "fsdecode", "sep"}


def file_calls(root: Path, stage: str) -> list[str]:
    """Calls under ``root/stage`` that touch files: ``open``, ``os.*`` (but name encoding)
    and ``Path`` methods that read, write or list."""
    found = []
    for rel, source in modules(root):
        if not rel.startswith(f"{stage}/"):
            continue
        for node in ast.walk(ast.parse(source)):
            if not isinstance(node, ast.Call):
                continue
            fn = node.func
            if isinstance(fn, ast.Name) and fn.id == "open":
                found.append(f"{rel}:{node.lineno} open()")
            elif isinstance(fn, ast.Attribute):
                is_os = isinstance(fn.value, ast.Name) and fn.value.id == "os"
                if (is_os and fn.attr not in PURE_OS) or fn.attr in FILE_CALLS:
                    found.append(f"{rel}:{node.lineno} .{fn.attr}()")
    return found


def test_transform_touches_no_file() -> None:
    found = file_calls(PACKAGE, "transform")
    assert not found, f"transform/ is pure: read files in sources/, write them in storage/: {found}"


def test_a_file_call_in_transform_is_found(tmp_path: Path) -> None:
    (tmp_path / "transform").mkdir()
    (tmp_path / "transform" / "x.py").write_text(
        "import os\nos.fsencode('a')\nopen('f')\nos.lstat('f')\n"
    )
    assert file_calls(tmp_path, "transform") == [
        "transform/x.py:3 open()", "transform/x.py:4 .lstat()",
    ]
