"""The package's import graph (issue 36): no cycle, and layers that point one way.

Every `import` of a `tff_sparsify` module counts, those inside functions
too (a lazy import is still a dependency), and so does every
`_lazy.load('tff_sparsify.…')` (a module named now, imported at first use).
The rules:

- `core` (the papers' math) and `compression` (codecs, quantizers) import
  nothing of `learning`, `simulation`, `deploy`, `binaries` or `config`;
- `learning` (TFF processes) nothing of `simulation`, `deploy`, `binaries`
  or `config`;
- `deploy` (a Keras model to files and runtimes) nothing of `simulation`,
  `binaries` or `config`, and of `learning` only `pruning` (tfmot's
  wrappers, to strip them).

The checker is first run on a small package written here, with a cycle and
a layer violation planted: it must find both.
"""

import ast
import os
import subprocess
import sys
import textwrap

import tensorflow as tf

from tests import fixtures

FORBIDDEN = {
    'core': ('learning', 'simulation', 'deploy', 'binaries', 'config'),
    'compression': ('learning', 'simulation', 'deploy', 'binaries', 'config'),
    'learning': ('simulation', 'deploy', 'binaries', 'config'),
    'deploy': ('learning', 'simulation', 'binaries', 'config'),  # Less ALLOWED.
}
ALLOWED = {'deploy': ('learning.pruning',)}


def import_graph(root: str, package: str) -> dict[str, set[str]]:
  """{module: the package's modules it imports}, from the source of `root/package`."""
  modules = {}
  for directory, _, names in os.walk(os.path.join(root, package)):
    for name in names:
      if name.endswith('.py'):
        path = os.path.join(directory, name)
        module = os.path.relpath(path, root)[:-3].replace(os.sep, '.')
        modules[module.removesuffix('.__init__')] = path
  graph = {}
  for module, path in modules.items():
    with open(path) as f:
      tree = ast.parse(f.read())
    base = module if path.endswith('__init__.py') else module.rpartition('.')[0]
    found = set()
    for node in ast.walk(tree):
      if isinstance(node, ast.Import):
        found.update(alias.name for alias in node.names)
      elif isinstance(node, ast.ImportFrom):
        parent = node.module or ''
        if node.level:
          parts = base.split('.')[:len(base.split('.')) - node.level + 1]
          parent = '.'.join(parts + ([parent] if parent else []))
        for alias in node.names:
          full = f'{parent}.{alias.name}'
          found.add(full if full in modules else parent)
      elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and node.func.attr == 'load' and isinstance(node.func.value, ast.Name)
            and node.func.value.id == '_lazy' and node.args
            and isinstance(node.args[0], ast.Constant)):
        found.add(node.args[0].value)
    graph[module] = {m for m in found if m in modules and m != module}
  return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
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
      component = []
      while True:
        w = stack.pop()
        on_stack.discard(w)
        component.append(w)
        if w == v:
          break
      if len(component) > 1:
        found.append(sorted(component))

  for v in sorted(graph):
    if v not in index:
      visit(v)
  return found


def violations(graph: dict[str, set[str]], package: str) -> list[str]:
  found = []
  for module, imported in sorted(graph.items()):
    layer = module.split('.')[1] if module.count('.') else ''
    for target in sorted(imported):
      inner = target[len(package) + 1:]
      if inner.split('.')[0] in FORBIDDEN.get(layer, ()) and not any(
          inner == a or inner.startswith(a + '.') for a in ALLOWED.get(layer, ())):
        found.append(f'{module} imports {target}')
  return found


class LayersTest(tf.test.TestCase):

  def test_the_checker_finds_a_planted_cycle_and_a_layer_violation(self):
    root = self.create_tempdir().full_path
    files = {
        'pkg/__init__.py': '',
        'pkg/core/__init__.py': '',
        'pkg/core/math.py': 'def f():\n  from pkg.learning import process\n',
        'pkg/learning/__init__.py': '',
        'pkg/learning/process.py': 'from pkg.core import math\nfrom . import other\n',
        'pkg/learning/other.py': 'import os\n',
        'pkg/deploy/__init__.py': '',
        'pkg/deploy/export.py': 'from pkg.learning import other\n',
        'pkg/compression/__init__.py': '',
        'pkg/compression/codec.py': "from pkg import _lazy\nlater = _lazy.load('pkg.deploy.export')\n",
        'pkg/_lazy.py': '',
    }
    for name, text in files.items():
      os.makedirs(os.path.dirname(os.path.join(root, name)), exist_ok=True)
      with open(os.path.join(root, name), 'w') as f:
        f.write(textwrap.dedent(text))
    graph = import_graph(root, 'pkg')
    self.assertEqual(graph['pkg.learning.process'], {'pkg.core.math', 'pkg.learning.other'})
    self.assertEqual(cycles(graph), [['pkg.core.math', 'pkg.learning.process']])
    self.assertEqual(graph['pkg.compression.codec'], {'pkg._lazy', 'pkg.deploy.export'})
    self.assertEqual(violations(graph, 'pkg'), [
        'pkg.compression.codec imports pkg.deploy.export',
        'pkg.core.math imports pkg.learning.process',
        'pkg.deploy.export imports pkg.learning.other'])

  def test_the_configurations_and_the_registry_load_no_tensorflow(self):
    """The binaries check flags before TensorFlow loads: the run's configuration, the
    registry and all ten algorithm modules (TensorFlow named through `_lazy`) import none."""
    code = ('import sys; import tff_sparsify.config; from tff_sparsify.learning import registry; '
            'assert len(registry.names()) == 10, registry.names(); '
            'loaded = sorted(m for m in sys.modules if m.split(".")[0] in '
            '("tensorflow", "tensorflow_federated", "keras")); print(loaded)')
    done = subprocess.run([sys.executable, '-c', code], cwd=fixtures.REPO, capture_output=True,
                          text=True, timeout=120, check=False)
    self.assertEqual(done.returncode, 0, done.stderr[-2000:])
    self.assertEqual(done.stdout.strip(), '[]')

  def test_no_function_is_longer_than_60_lines(self):
    """Lines of code of each function (its docstring aside), nested functions included."""
    long = []
    for directory, _, names in os.walk(os.path.join(fixtures.REPO, 'tff_sparsify')):
      for name in (n for n in names if n.endswith('.py')):
        path = os.path.join(directory, name)
        with open(path) as f:
          tree = ast.parse(f.read())
        for node in ast.walk(tree):
          if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            lines = node.end_lineno - node.lineno + 1
            first = node.body[0]
            if (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)):
              lines -= first.end_lineno - first.lineno + 1
            if lines > 60:
              long.append(f'{os.path.relpath(path, fixtures.REPO)}:{node.name} ({lines})')
    self.assertEqual(long, [])

  def test_the_package_has_no_cycle_and_its_layers_point_one_way(self):
    graph = import_graph(fixtures.REPO, 'tff_sparsify')
    self.assertGreater(len(graph), 40)
    self.assertIn('tff_sparsify.learning.pruning', graph['tff_sparsify.deploy.model_export'])
    self.assertEqual(cycles(graph), [])
    self.assertEqual(violations(graph, 'tff_sparsify'), [])


if __name__ == '__main__':
  tf.test.main()
