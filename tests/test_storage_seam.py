"""The storage seam: outside ``ecom_stream/storage/`` no module imports ``deltalake`` or
renames, locks or syncs files itself (``os.replace``, ``os.rename``, ``fcntl.flock``,
``syncfs``, ``atomic_write``); it calls the lake's parts instead."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
STORAGE = "ecom_stream/storage/"

# Modules that write files of their own, never the lake's: a landing folder (a benchmark or
# test drop, the generator), a report, a benchmark peer's own Delta tables.
OWN_FILES: dict[str, str] = {
    "ecom_stream/testing/plugin.py": "drop_batch writes a batch file into landing",
    "ecom_stream/tools/bench_ecom.py": "drops batch files into its landing folder",
    "ecom_stream/tools/bench_peers.py": "the naive peers write Delta tables of their own",
    "ecom_stream/tools/bench_report.py": "writes its results file",
    "ecom_stream/tools/generate.py": "writes the generated batch files",
}

_NAMES = {"atomic_write", "syncfs"}
_CALLS = {("os", "replace"), ("os", "rename"), ("fcntl", "flock")}


def _uses(tree: ast.AST) -> list[str]:
    """What in ``tree`` crosses the seam, as ``line: what``."""
    found = []
    for node in ast.walk(tree):
        line = getattr(node, "lineno", 0)
        if isinstance(node, ast.Import):
            found += [f"{line}: import {a.name}" for a in node.names if _is_delta(a.name)]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if _is_delta(module):
                found.append(f"{line}: from {module} import")
            found += [
                f"{line}: from {module} import {a.name}"
                for a in node.names
                if a.name in _NAMES or (module, a.name) in _CALLS
            ]
        elif isinstance(node, ast.Attribute):
            base = node.value.id if isinstance(node.value, ast.Name) else None
            if (base, node.attr) in _CALLS or node.attr in _NAMES:
                found.append(f"{line}: {base or '...'}.{node.attr}")
        elif isinstance(node, ast.Name) and node.id in _NAMES:
            found.append(f"{line}: {node.id}")
    return sorted(set(found))


def _is_delta(module: str) -> bool:
    return module == "deltalake" or module.startswith("deltalake.")


def _crossings() -> dict[str, list[str]]:
    files = [*REPO.glob("ecom_stream/**/*.py"), *REPO.glob("dashboard/**/*.py")]
    found = {}
    for path in sorted(files):
        rel = path.relative_to(REPO).as_posix()
        if rel.startswith(STORAGE):
            continue
        uses = _uses(ast.parse(path.read_text(), filename=rel))
        if uses:
            found[rel] = uses
    return found


def test_nothing_outside_storage_touches_lake_files_itself() -> None:
    crossings = _crossings()
    allowed = set(OWN_FILES)
    offending = {rel: uses for rel, uses in crossings.items() if rel not in allowed}
    assert not offending, (
        "call the lake's parts (ecom_stream/storage) instead of deltalake, os.replace, "
        f"os.rename, fcntl.flock, syncfs or atomic_write: {offending}"
    )


def test_the_allow_lists_hold_no_module_that_passes() -> None:
    crossings = _crossings()
    stale = sorted(set(OWN_FILES) - set(crossings))
    assert not stale, f"these modules pass now: remove them from the allow-lists: {stale}"


def test_the_check_sees_each_crossing() -> None:
    source = (
        "import deltalake\nfrom deltalake.exceptions import DeltaError\nimport os, fcntl\n"
        "from ecom_stream.storage.blobs import atomic_write\n"
        "os.replace('a', 'b')\nos.rename('a', 'b')\nfcntl.flock(0, 0)\nlibc.syncfs(0)\n"
    )
    uses = _uses(ast.parse(source))
    for what in ("import deltalake", "from deltalake.exceptions", "import atomic_write",
                 "os.replace", "os.rename", "fcntl.flock", "syncfs"):
        assert any(what in use for use in uses), (what, uses)
    assert _uses(ast.parse("import os\nos.path.join('a')\nPath('a').replace('b')\n")) == []
