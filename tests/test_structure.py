"""The package's shape: no module imports in a circle; the entry point keeps its name."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).parents[1] / "src"


def _modules(root: Path = SRC) -> dict[str, tuple[Path, bool]]:
    """Dotted name → (file, is a package ``__init__``) for every module of bcosnet."""
    out = {}
    for path in sorted((root / "bcosnet").rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_pkg else parts)] = (path, is_pkg)
    return out


def import_graph(root: Path = SRC) -> dict[str, set[str]]:
    """Module → the bcosnet modules it imports, from every ``import`` statement
    (module level and inside functions).  ``from P import x`` points at the
    module ``P.x`` when there is one, else at ``P``; a module's parent packages,
    which Python imports first, are not edges (else every package would be a circle
    with the modules its ``__init__`` imports)."""
    mods = _modules(root)
    edges: dict[str, set[str]] = {m: set() for m in mods}
    for mod, (path, is_pkg) in mods.items():
        here = mod.split(".") if is_pkg else mod.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                edges[mod] |= {a.name for a in node.names if a.name in mods}
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = here[: len(here) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                for a in node.names:
                    sub = f"{target}.{a.name}"
                    if sub in mods:
                        edges[mod].add(sub)
                    elif target in mods:
                        edges[mod].add(target)
    return edges


def import_cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (or a module
    importing itself): every import circle, each listed once (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:  # recursion depth ≤ the number of modules (~100)
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in edges[v]:
                found.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_planted_circle() -> None:
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}}
    assert sorted(import_cycles(edges)) == [["a", "b", "c"], ["e"]]
    assert import_cycles({"a": {"b"}, "b": set()}) == []


def test_the_graph_sees_imports_inside_functions(tmp_path: Path) -> None:
    pkg = tmp_path / "bcosnet" / "sub"
    pkg.mkdir(parents=True)
    (tmp_path / "bcosnet" / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("from .a import f\n")
    (pkg / "a.py").write_text("def f():\n    from .b import g\n    return g\n")
    (pkg / "b.py").write_text("from . import a\nfrom .. import sub\n")
    edges = import_graph(tmp_path)
    assert edges["bcosnet.sub.a"] == {"bcosnet.sub.b"}
    assert edges["bcosnet.sub.b"] == {"bcosnet.sub.a", "bcosnet.sub"}
    assert import_cycles(edges) == [["bcosnet.sub", "bcosnet.sub.a", "bcosnet.sub.b"]]


def test_no_module_of_bcosnet_imports_in_a_circle() -> None:
    edges = import_graph()
    assert "bcosnet.models.registry" in edges and len(edges) > 50
    cycles = import_cycles(edges)
    detail = "\n".join(
        " ↔ ".join(c) + "\n" + "\n".join(
            f"    {m} imports {sorted(edges[m] & set(c))}" for m in c) for c in cycles)
    assert not cycles, f"import circles in src/bcosnet:\n{detail}"


def test_the_entry_point_stays_a_function_after_the_parser_is_built() -> None:
    import bcosnet.cli
    from bcosnet.cli import build_parser

    build_parser()  # imports every sub-command module (bcosnet main's is cli/main_job.py)
    assert callable(bcosnet.cli.main) and bcosnet.cli.main.__module__ == "bcosnet.cli"
    assert build_parser().parse_args(["main", "--quick"]).command == "main"


# ----------------------------------------------------------------------------- function length
MAX_BODY_LINES = 80


def body_lines(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Lines of a function's body: from its first statement after the docstring to
    the last line of its last statement (comments and blank lines between count;
    a nested function counts in the function that holds it)."""
    body = fn.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
            and isinstance(body[0].value.value, str):
        body = body[1:]
    if not body:
        return 0
    return (body[-1].end_lineno or body[-1].lineno) - body[0].lineno + 1


def long_functions(root: Path = SRC, limit: int = MAX_BODY_LINES) -> list[str]:
    """``file:line name (N lines)`` for every function or method under ``root``
    whose body (:func:`body_lines`) is longer than ``limit`` lines."""
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = body_lines(node)
                if n > limit:
                    found.append(f"{path.relative_to(root)}:{node.lineno} {node.name} "
                                 f"({n} lines)")
    return found


def test_the_length_counter_counts_the_body_without_the_docstring(tmp_path: Path) -> None:
    statements = "".join(f"    x{i} = {i}\n" for i in range(81))
    (tmp_path / "m.py").write_text(
        'def long():\n    """Doc\n    string."""\n' + statements
        + 'def short():\n    """Doc."""\n    x = 1\n    # a comment\n\n    return x\n'
        + "class C:\n    def method(self):\n        def inner():\n            return 1\n"
        + "        return inner\n")
    tree = ast.parse((tmp_path / "m.py").read_text())
    counts = {n.name: body_lines(n) for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
    assert counts == {"long": 81, "short": 4, "method": 3, "inner": 1}
    assert long_functions(tmp_path) == ["m.py:1 long (81 lines)"]
    assert long_functions(tmp_path, limit=81) == []


def test_no_function_body_in_src_is_longer_than_80_lines() -> None:
    """Counted from the first statement after the docstring to the end of the
    last statement (:func:`body_lines`)."""
    found = long_functions()
    assert not found, f"function bodies over {MAX_BODY_LINES} lines:\n" + "\n".join(found)
