"""One process of a multi-process feature extraction (started by test_evaluation.py, not
collected).

  python tests/extraction_worker.py PROCESS_ID NUM_PROCESSES PORT DATA_DIR OUT

Joins a ``jax.distributed`` run on 127.0.0.1:PORT (when NUM_PROCESSES > 1) with the CPU devices
of the caller's XLA_FLAGS, reads the tiny scenes' ``objects`` split streamed (held images: none),
encodes it with a fresh tiny ViT on a mesh over all devices, and writes OUT.PROCESS_ID.npz: the
targets and the pooled features and tokens every process gets back, the records this process
read for their labels, and those it decoded.
"""
import collections
import os
import sys


class CountingSource:
  """A data source that counts the records read from it."""

  def __init__(self, source):
    self.source, self.reads = source, collections.Counter()

  def __len__(self):
    return len(self.source)

  def __getitem__(self, i):
    self.reads[int(i)] += 1
    return self.source[i]


def main():
  process_id, num_processes, port = map(int, sys.argv[1:4])
  data_dir, out = sys.argv[4:6]
  # pylint: disable=g-import-not-at-top
  from annoprop_jax import multihost
  if num_processes > 1:
    multihost.initialize('auto', f'127.0.0.1:{port}', num_processes, process_id)
  import jax
  import numpy as np
  from annoprop_jax import configuration, sharding
  from annoprop_jax.data import pipeline
  from annoprop_jax.evaluation import encoder, task_data, tasks
  from annoprop_jax.models import vit

  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  config = configuration.load(os.path.join(repo, 'configs', 'dino_scenes.py:tiny')).unlock()
  config.data.data_dir = data_dir
  encoder_config = configuration.encoder_config(config)
  sources = []
  open_source = pipeline.open_source
  pipeline.open_source = lambda *args: sources.append(CountingSource(open_source(*args))) or \
      sources[-1]
  split = task_data.load(config.data, 'scenes', tasks.TASKS['objects'], 'objects',
                         encoder_config.image_size, 21, images_in_memory=1)
  counting, images = sources[0], split.images
  label_reads = np.array(sorted(counting.reads))
  counting.reads.clear()
  params = vit.ViT(encoder_config).init(jax.random.PRNGKey(0),
                                        np.zeros((1,) + images.shape[1:], np.uint8))['params']
  mesh = sharding.make_mesh(dict(data=-1, fsdp=1, tensor=1))
  pooled, tokens = encoder.features(encoder_config, params, images, mesh, batch_size=8,
                                    num_threads=2)
  np.savez(f'{out}.{process_id}.npz', pooled=pooled, tokens=tokens, targets=split.targets,
           label_reads=label_reads, decoded=np.array(sorted(counting.reads)),
           reads=np.array(list(counting.reads.values())))


if __name__ == '__main__':
  main()
