"""The package's modules import one another without a cycle (data flows one way).

Every import counts, also those inside functions (a lazy import hides a cycle from Python, not
from a reader). Importing ``annoprop_jax.a.b`` counts as an edge to that module only, not to the
package ``annoprop_jax.a`` around it.
"""
import ast
import os

from conftest import REPO

PACKAGE = os.path.join(REPO, 'annoprop_jax')


def _modules():
  """{'annoprop_jax.x.y': path} of every module of the package (packages by their __init__)."""
  modules = {}
  for directory, _, files in os.walk(PACKAGE):
    for name in files:
      if name.endswith('.py'):
        path = os.path.join(directory, name)
        parts = os.path.relpath(path, REPO)[:-3].split(os.sep)
        modules['.'.join(parts[:-1] if parts[-1] == '__init__' else parts)] = path
  return modules


def import_graph(modules=None):
  """{module: set of package modules it imports}, of ``modules`` ({name: path}; default: the
  package's)."""
  modules = _modules() if modules is None else modules
  graph = {}
  for module, path in modules.items():
    with open(path) as f:
      tree = ast.parse(f.read(), path)
    targets = set()
    for node in ast.walk(tree):
      if isinstance(node, ast.Import):
        targets.update(alias.name for alias in node.names)
      elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
        # `from a import b` names module a.b when there is one, else an attribute of a.
        targets.update(f'{node.module}.{alias.name}' if f'{node.module}.{alias.name}' in modules
                       else node.module for alias in node.names)
    graph[module] = {t for t in targets if t in modules and t != module}
  return graph


def cycles(graph):
  """The strongly connected components of more than one module (Tarjan)."""
  index, low, stack, on_stack, found = {}, {}, [], set(), []

  def visit(v):
    index[v] = low[v] = len(index)
    stack.append(v)
    on_stack.add(v)
    for w in sorted(graph[v]):
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on_stack:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      component = set()
      while True:
        w = stack.pop()
        on_stack.discard(w)
        component.add(w)
        if w == v:
          break
      if len(component) > 1:
        found.append(sorted(component))

  for v in sorted(graph):
    if v not in index:
      visit(v)
  return found


def test_the_cycle_finder_finds_a_planted_cycle():
  graph = {'a': {'b'}, 'b': {'c'}, 'c': {'a'}, 'd': {'a'}}
  assert cycles(graph) == [['a', 'b', 'c']]
  assert cycles({'a': {'b'}, 'b': set()}) == []


def test_the_graph_sees_lazy_imports(tmp_path):
  (tmp_path / 'a.py').write_text('def f():\n  from annoprop_jax import b\n  import annoprop_jax.c\n')
  for name in 'bc':
    (tmp_path / f'{name}.py').write_text('')
  modules = {f'annoprop_jax.{n}': str(tmp_path / f'{n}.py') for n in 'abc'}
  assert import_graph(modules)['annoprop_jax.a'] == {'annoprop_jax.b', 'annoprop_jax.c'}


def test_no_module_imports_a_module_that_imports_it_back():
  found = cycles(import_graph())
  assert not found, 'import cycles: ' + '; '.join(' <-> '.join(c) for c in found)
