"""Command line: ``python -m annoprop_jax.main COMMAND [--flags]``; the commands and their
flags are ``annoprop_jax/commands`` (the table: ``commands.TABLE``). Any config field can be
overridden: ``--config.total_steps=100 --config.model.width=64``.

Several processes (TPU pod hosts, SLURM tasks) join one run with ``--distributed`` (default
auto: SLURM job steps, Open MPI and GKE TPU pods are detected) or explicit
``--coordinator_address=HOST:PORT --num_processes=N --process_id=I``.
"""
import importlib
import sys

from annoprop_jax import stop_request

if __name__ == '__main__' and sys.argv[1:2] == ['train']:
  # First thing: a SIGTERM during the imports below already stops the run cleanly.
  stop_request.StopRequest()

# pylint: disable=g-import-not-at-top,wrong-import-position
from absl import app
from absl import flags

from annoprop_jax import commands
from annoprop_jax.commands import common
# pylint: enable=g-import-not-at-top,wrong-import-position


def parse_flags(argv):
  """absl's flag parsing; an error is one line (a config override names the nearest keys, via
  ``commands.experiment``, which the commands that read ``--config`` import)."""
  try:
    return flags.FLAGS(argv)
  except (flags.Error, KeyError, AttributeError, TypeError, ValueError) as e:
    experiment = sys.modules.get('annoprop_jax.commands.experiment')
    message = (experiment.flag_error(e, argv) if experiment
               else (str(e).strip().splitlines() or [repr(e)])[-1])
    print(f'error: {message}', file=sys.stderr)
    sys.exit(2)


def command_help(name):
  """``COMMAND --help``: the command's summary and the flags of the modules of
  ``annoprop_jax.commands`` that it loaded (its own and the shared ones)."""
  lines = [f'python -m annoprop_jax.main {name} [--flags]: {commands.TABLE[name].summary}']
  for module_name, _ in sorted(flags.FLAGS.flags_by_module_dict().items()):
    if module_name.startswith('annoprop_jax.commands'):
      lines += ['', flags.FLAGS.module_help(module_name).strip('\n')]
  return '\n'.join(lines)


def run(argv):
  """Runs ``argv[1]``, a command of ``commands.TABLE``, with the flags that follow it."""
  name = argv[1] if len(argv) > 1 else None
  if name not in commands.TABLE:
    print(commands.usage(), file=sys.stderr)
    sys.exit(2)
  if name == 'train' and stop_request.active() is None:
    stop_request.StopRequest()
  module = importlib.import_module(f'annoprop_jax.commands.{commands.TABLE[name].module}')
  if {'-h', '--help'} & set(argv[2:]):
    print(command_help(name))
    sys.exit(0)

  def checked_main(args):
    common.check_stores()
    return module.main(args)

  app.run(checked_main, argv=[argv[0], *argv[2:]], flags_parser=parse_flags)


if __name__ == '__main__':
  run(sys.argv)
