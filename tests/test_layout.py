"""The layout's rules (docs/design.md 2), read from the source with `ast`, function-local imports
included: `vidtok/`, `lm/`, `configs/` and `sharding/` import neither `train` nor `kineto`;
`train/` does not import `kineto`; the project's modules import each other without a cycle."""
from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ("configs", "sharding", "vidtok", "lm", "train", "kineto")
# package -> the top-level packages it must not import
FORBIDDEN = {"configs": ("train", "kineto"), "sharding": ("train", "kineto"), "vidtok": ("train", "kineto"),
             "lm": ("train", "kineto"), "train": ("kineto",)}


def _module_files() -> dict[str, pathlib.Path]:
  """Dotted module name -> file, for every module under PACKAGES (a package is its __init__)."""
  modules = {}
  for package in PACKAGES:
    for path in sorted((ROOT / package).rglob("*.py")):
      parts = path.relative_to(ROOT).with_suffix("").parts
      modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
  return modules


MODULES = _module_files()


def _imports(name: str, path: pathlib.Path) -> list[tuple[str, int, str]]:
  """(imported project module, line, the import as written) for every import in the file,
  at any depth. `from pkg import x` imports `pkg.x` when that is a module, else `pkg`."""
  is_package = path.name == "__init__.py"
  found = []
  for node in ast.walk(ast.parse(path.read_text(), str(path))):
    if isinstance(node, ast.Import):
      for alias in node.names:
        found += [(alias.name, node.lineno, f"import {alias.name}")]
    elif isinstance(node, ast.ImportFrom):
      if node.level:  # relative: resolve against this module's package
        base = name.split(".")[:len(name.split(".")) - node.level + (1 if is_package else 0)]
        pkg = ".".join(base + ([node.module] if node.module else []))
      else:
        pkg = node.module or ""
      written = f"from {'.' * node.level}{node.module or ''} import {', '.join(a.name for a in node.names)}"
      for alias in node.names:
        sub = f"{pkg}.{alias.name}"
        found += [(sub if sub in MODULES else pkg, node.lineno, written)]
  # Keep the project's own modules: `import lm.vocab` names lm.vocab (and, by Python's rules,
  # runs lm/__init__ first: the graph edge is to the deepest module named).
  out = []
  for target, line, written in found:
    while target and target not in MODULES:
      target = target.rpartition(".")[0]
    if target and target != name:
      out.append((target, line, written))
  return out


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _where(name: str, line: int, written: str) -> str:
  return f"{MODULES[name].relative_to(ROOT)}:{line} ({name}): `{written}`"


def test_the_walk_sees_every_package_and_local_imports():
  assert all(p in MODULES for p in PACKAGES), sorted(MODULES)
  assert sum(len(edges) for edges in GRAPH.values()) > 50  # the walk found the project's imports


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_module_imports_upward(package):
  bad = [_where(name, line, written)
         for name, edges in GRAPH.items() if name.split(".")[0] == package
         for target, line, written in edges if target.split(".")[0] in FORBIDDEN[package]]
  assert not bad, f"{package}/ must not import {' or '.join(FORBIDDEN[package])}:\n  " + "\n  ".join(bad)


def test_no_import_cycle():
  """Depth-first search over the module graph; every cycle found is reported with its imports."""
  cycles, state, stack = [], {}, []  # state: 1 on the stack, 2 done

  def visit(name):
    state[name] = 1
    for target, line, written in GRAPH[name]:
      stack.append((name, line, written, target))
      if state.get(target) == 1:  # a back edge: the cycle is the stack from target's entry
        start = next(i for i, (n, *_) in enumerate(stack) if n == target)
        cycles.append(list(stack[start:]))
      elif target not in state:
        visit(target)
      stack.pop()
    state[name] = 2

  for name in sorted(GRAPH):
    if name not in state:
      visit(name)
  report = []
  for cycle in cycles:
    names = " -> ".join([n for n, *_ in cycle] + [cycle[0][0]])
    report.append(names + "\n    " + "\n    ".join(_where(n, line, w) for n, line, w, _ in cycle))
  assert not cycles, f"{len(cycles)} import cycle(s):\n  " + "\n  ".join(report)


def test_readme_layout_has_one_line_per_folder():
  """README.md's layout block names every tracked folder (tests/ subfolders mirror the
  packages and go under tests/) and no folder that does not exist."""
  import subprocess
  tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout.split()
  if not tracked:  # not a git checkout (e.g. an sdist): nothing to compare against
    pytest.skip("not a git checkout")
  folders = {"/".join(p.split("/")[:depth]) + "/" for p in tracked for depth in (1, 2)
             if p.count("/") >= depth and not p.startswith("tests/")}
  folders |= {"tests/"}
  readme = (ROOT / "README.md").read_text()
  block = readme.split("## Layout", 1)[1].split("```", 2)[1]
  listed = [line.split()[0] for line in block.splitlines() if line.strip()]
  assert len(listed) == len(set(listed)), f"a folder is listed twice: {listed}"
  assert set(listed) == folders, (f"README layout lists {sorted(set(listed) - folders)} that are not "
                                  f"folders, and misses {sorted(folders - set(listed))}")
