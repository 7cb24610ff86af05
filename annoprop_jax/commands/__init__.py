"""The commands of ``python -m annoprop_jax.main COMMAND [--flags]``: one module each, declaring
its own flags and a ``main(argv)``; ``main.py`` imports only the one it runs, so a command starts
without the imports of the others (``prepare`` without JAX).
"""
import dataclasses


@dataclasses.dataclass(frozen=True)
class Command:
  module: str           # annoprop_jax.commands.<module>
  summary: str


TABLE = {
    'train': Command('train', 'train (or resume) --config in --workdir'),
    'evaluate': Command('evaluate', 'probe a checkpoint of --workdir (the latest, or --step) on '
                        'the frozen encoder'),
    'export': Command('export', "write a checkpoint's encoder to --output (--format=orbax, or "
                      'safetensors for timm)'),
    'diagnose': Command('diagnose', 'AB runs: whether the decoder uses the box move (KL with '
                        'true and shuffled moves)'),
    'visualize': Command('visualize', 'value maps, attention maps, views and training charts '
                         'of a checkpoint'),
    'sweep': Command('sweep', 'train --config over a grid of overrides (--sweep), one run per '
                     'folder of --workdir; --report compares them'),
    'compile': Command('compile', "lower and compile the config's train step: FLOPs and "
                       'memory per device'),
    'prepare-data': Command('prepare_data', 'write the embedded scenes dataset of --config '
                            'into data.data_dir'),
    'prepare': Command('prepare', 'convert a dataset (coco, imagefolder, webdataset, video) '
                       'into array_record'),
}


def usage():
  width = max(map(len, TABLE))
  return 'usage: python -m annoprop_jax.main COMMAND [--flags]\n' + '\n'.join(
      f'  {name:{width}s}  {command.summary}' for name, command in TABLE.items())
