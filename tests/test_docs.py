"""Every file a document names exists in the repository, and no document points outside it."""
import glob
import os
import re
import subprocess

from conftest import REPO

# A path inside the repository, as documents and docstrings write it: a top-level folder, then
# names (globs allowed). Placeholders (configs/FILE.py, objectives/NAME.py) are upper-case words
# or shell variables.
REPO_PATH = re.compile(r'(?<![\w/.~-])((?:annoprop_jax|configs|tests|benchmarks|launch|docs|\.ci)'
                       r'/[\w./*$-]*[\w*$])')
PLACEHOLDER = re.compile(r'(?<![a-z])[A-Z]{3,}(?![a-z])|\$')
OUTSIDE = re.compile(r'\.\./shared|\bMETHOD\.md\b|\bDESIGN\.md\b')
MARKDOWN_LINK = re.compile(r'\]\(([^)#\s]+)(?:#[^)]*)?\)')


def _tracked_text_files():
  names = subprocess.run(['git', 'ls-files'], cwd=REPO, capture_output=True, text=True,
                         check=True).stdout.split()
  return [n for n in names if n.endswith(('.md', '.py', '.sh', '.sbatch', '.txt', '.ini'))
          or n == '.ci/run']


def _read(name):
  with open(os.path.join(REPO, name), encoding='utf-8') as f:
    return f.read()


def repo_paths(text):
  """The repository paths ``text`` names, placeholders left out."""
  return sorted({p.rstrip('.') for p in REPO_PATH.findall(text) if not PLACEHOLDER.search(p)})


def missing_paths(text):
  return [p for p in repo_paths(text) if not glob.glob(os.path.join(REPO, p))]


def test_repo_paths_finds_paths_and_skips_placeholders():
  text = ('see `docs/method.md` and [x](docs/scaling.md), configs/paper/*.py, '
          'configs/FILE.py, configs/ab_NAME_scenes.py, out/rate$1.json, ../configs/other.py, '
          'annoprop_jax/data/views.py.')
  assert repo_paths(text) == ['annoprop_jax/data/views.py', 'configs/paper/*.py',
                              'docs/method.md', 'docs/scaling.md']
  absent = 'docs/' + 'no_such_page.md'     # split, so that this file names no missing path
  assert missing_paths(f'`{absent}`') == [absent]


def test_every_named_file_exists():
  missing = {name: missing_paths(_read(name)) for name in _tracked_text_files()}
  assert not {name: paths for name, paths in missing.items() if paths}


def test_nothing_points_outside_the_repository():
  outside = {name: OUTSIDE.findall(_read(name)) for name in _tracked_text_files()}
  assert not {name: found for name, found in outside.items() if found}


def test_markdown_links_resolve():
  broken = {}
  for name in [n for n in _tracked_text_files() if n.endswith('.md')]:
    here = os.path.dirname(os.path.join(REPO, name))
    targets = [t for t in MARKDOWN_LINK.findall(_read(name)) if '://' not in t]
    broken[name] = [t for t in targets if not os.path.exists(os.path.join(here, t))]
  assert not {name: targets for name, targets in broken.items() if targets}


def test_readme_is_short_and_links_every_doc():
  readme = _read('README.md')
  assert len(readme.splitlines()) <= 170
  for doc in sorted(glob.glob(os.path.join(REPO, 'docs', '*.md'))):
    assert f'docs/{os.path.basename(doc)}' in readme, doc
