"""The module graph: no import cycle among asg_jax modules (top-level and function-level
imports alike), and nothing under asg_jax/models imports asg_jax/losses."""
import ast
import pathlib

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "asg_jax"


def module_name(path: pathlib.Path) -> str:
  rel = path.relative_to(PACKAGE.parent).with_suffix("")
  parts = list(rel.parts)
  if parts[-1] == "__init__":
    parts = parts[:-1]
  return ".".join(parts)


def imports_of(path: pathlib.Path, modules: set[str]) -> set[str]:
  """The asg_jax modules `path` imports (`from asg_jax.x import y` counts asg_jax.x.y when
  that is a module, else asg_jax.x)."""
  out = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules
               else node.module for a in node.names]
    else:
      continue
    out.update(n for n in names if n in modules)
  return out


def graph() -> dict[str, set[str]]:
  files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
  # a package's __init__ re-exporting its modules is not a dependency of those modules
  return {m: {d for d in imports_of(p, set(files)) if d != m and not m.startswith(d + ".")}
          for m, p in files.items()}


def test_no_import_cycle():
  g = graph()
  state, stack, cycles = {}, [], []

  def visit(m):
    state[m] = "open"
    stack.append(m)
    for d in sorted(g.get(m, ())):
      if state.get(d) == "open":
        cycles.append(stack[stack.index(d):] + [d])
      elif d not in state:
        visit(d)
    stack.pop()
    state[m] = "done"

  for m in sorted(g):
    if m not in state:
      visit(m)
  assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


def test_models_do_not_import_losses():
  g = graph()
  bad = {m: sorted(d for d in deps if d.startswith("asg_jax.losses"))
         for m, deps in g.items() if m.startswith("asg_jax.models")}
  assert not {m: d for m, d in bad.items() if d}
