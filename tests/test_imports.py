"""The module graph, read statically (top-level and function-level imports alike): no import
cycle among asg_jax modules, none among its rooms (a root module, or a sub-package taken
whole), nothing under asg_jax/models importing asg_jax/losses, no recipe importing a command
line, and no module over 500 lines."""
import ast
import pathlib

REPO = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = REPO / "asg_jax"
MAX_LINES = 500
COMMAND_LINES = ("asg_jax.main", "asg_jax.evaluate")


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


def room(module: str) -> str:
  """`asg_jax.data.pipeline.spec` -> `asg_jax.data`; `asg_jax.train` -> itself."""
  return ".".join(module.split(".")[:2])


def room_graph() -> dict[str, set[str]]:
  out: dict[str, set[str]] = {}
  for m, deps in graph().items():
    if m == "asg_jax":
      continue
    out.setdefault(room(m), set()).update(room(d) for d in deps if room(d) != room(m))
  return out


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
  state, stack, found = {}, [], []

  def visit(m):
    state[m] = "open"
    stack.append(m)
    for d in sorted(g.get(m, ())):
      if state.get(d) == "open":
        found.append(stack[stack.index(d):] + [d])
      elif d not in state:
        visit(d)
    stack.pop()
    state[m] = "done"

  for m in sorted(g):
    if m not in state:
      visit(m)
  return found


def test_no_import_cycle_between_modules():
  assert not cycles(graph()), "\n".join(" -> ".join(c) for c in cycles(graph()))


def test_no_import_cycle_between_rooms():
  found = cycles(room_graph())
  assert not found, "\n".join(" -> ".join(c) for c in found)


def test_the_checks_see_a_planted_cycle():
  """The cycle finder is not vacuous: a loop of rooms through a sub-package is found."""
  g = {"asg_jax.config": {"asg_jax.data"}, "asg_jax.data": {"asg_jax.config"}, "x": set()}
  assert cycles(g) == [["asg_jax.config", "asg_jax.data", "asg_jax.config"]]
  assert room("asg_jax.data.pipeline.spec") == "asg_jax.data" and room("asg_jax.train") == (
      "asg_jax.train")
  assert "asg_jax.data" in room_graph()["asg_jax.train"]      # real arrows are read


def test_models_do_not_import_losses():
  g = graph()
  bad = {m: sorted(d for d in deps if d.startswith("asg_jax.losses"))
         for m, deps in g.items() if m.startswith("asg_jax.models")}
  assert not {m: d for m, d in bad.items() if d}


def test_recipes_import_no_command_line():
  modules = set(graph())
  bad = {str(p.relative_to(REPO)): sorted(imports_of(p, modules) & set(COMMAND_LINES))
         for p in (REPO / "configs").rglob("*.py")}
  assert not {p: d for p, d in bad.items() if d}
  assert "asg_jax.transfer.config" in imports_of(REPO / "configs" / "transfer" / "demo.py",
                                                 modules)


def test_no_module_over_500_lines():
  long = {str(p.relative_to(REPO)): n for p in PACKAGE.rglob("*.py")
          if (n := len(p.read_text().splitlines())) > MAX_LINES}
  assert not long, long
