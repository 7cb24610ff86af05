"""Every file a document names exists in the repository, and no document points outside it."""
import glob
import os
import re
import subprocess

import pytest

from conftest import REPO

# A path inside the repository, as documents and docstrings write it: a top-level folder, then
# names (globs allowed). Placeholders (configs/FILE.py, objectives/NAME.py) are upper-case words.
REPO_PATH = re.compile(r'(?<![\w/.~-])((?:annoprop_jax|configs|tests|benchmarks|launch|docs|\.ci)'
                       r'/[\w./*-]*[\w*])')
PLACEHOLDER = re.compile(r'\b[A-Z]{3,}\b')
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
          'configs/FILE.py, ../configs/other.py, annoprop_jax/data/views.py.')
  assert repo_paths(text) == ['annoprop_jax/data/views.py', 'configs/paper/*.py',
                              'docs/method.md', 'docs/scaling.md']
  assert missing_paths('`docs/no_such_page.md`') == ['docs/no_such_page.md']


@pytest.mark.parametrize('name', _tracked_text_files())
def test_every_named_file_exists(name):
  assert not missing_paths(_read(name)), name


@pytest.mark.parametrize('name', _tracked_text_files())
def test_nothing_points_outside_the_repository(name):
  assert not OUTSIDE.findall(_read(name)), name


@pytest.mark.parametrize('name', [n for n in _tracked_text_files() if n.endswith('.md')])
def test_markdown_links_resolve(name):
  text = _read(name)
  targets = [t for t in MARKDOWN_LINK.findall(text) if '://' not in t]
  here = os.path.dirname(os.path.join(REPO, name))
  assert not [t for t in targets if not os.path.exists(os.path.join(here, t))], name


def test_readme_is_short_and_links_every_doc():
  readme = _read('README.md')
  assert len(readme.splitlines()) <= 170
  for doc in sorted(glob.glob(os.path.join(REPO, 'docs', '*.md'))):
    assert f'docs/{os.path.basename(doc)}' in readme, doc
