"""Grain worker processes for a stream (``data.<stream>.num_workers``).

With N > 0 workers, each process decodes and crops its own slice of the stream into whole
batches (grain's ``mp_prefetch``) and the batches come back round-robin, so the order is
deterministic for a given N but differs between worker counts: an iterator state saved with N
workers cannot be restored with another count (grain 0.2.18 does not detect it), so the count
is stored in the state and checked. The workers' undecodable-record counters are summed.
"""
import os
import threading
import time

from absl import flags
import grain
import numpy as np

from annoprop_jax import errors


def check_layout(state, num_workers, process_count):
  """ConfigError if ``state`` was saved with another worker or JAX process count."""
  saved_workers = state.get('num_workers', 0)
  if saved_workers != num_workers:
    raise errors.ConfigError(
        f'data iterator state saved with {saved_workers} grain worker processes cannot be '
        f'restored with {num_workers}: resume with data.<stream>.num_workers={saved_workers}')
  if state['process_count'] != process_count:
    raise errors.ConfigError(
        f'this data iterator state was saved with {state["process_count"]} JAX processes and '
        f'cannot be restored with {process_count}; resume with the same process count, '
        f'or start a new run from these weights with --config.init_from')


class _WorkerLayoutIterator(grain.DatasetIterator):
  """Sums the workers' skip counters and keeps the worker count in the state."""

  def __init__(self, parent, num_workers, process_count):
    super().__init__(parent)
    self._num_workers = num_workers
    self._process_count = process_count
    self._worker_skipped = [0] * num_workers
    self._next_worker = 0

  def __next__(self):
    batch = next(self._parent)
    # Batches arrive round-robin; each carries its own worker's running count.
    self._worker_skipped[self._next_worker] = int(np.max(batch['skipped_records']))
    self._next_worker = (self._next_worker + 1) % self._num_workers
    batch['skipped_records'] = np.full_like(batch['skipped_records'], sum(self._worker_skipped))
    return batch

  def get_state(self):
    return {'parent': self._parent.get_state(), 'num_workers': self._num_workers,
            'process_count': self._process_count, 'worker_skipped': list(self._worker_skipped),
            'next_worker': self._next_worker}

  def set_state(self, state):
    check_layout(state, self._num_workers, self._process_count)
    self._parent.set_state(state['parent'])
    self._worker_skipped = list(state['worker_skipped'])
    self._next_worker = state['next_worker']


class _WorkerLayout(grain.IterDataset):

  def __init__(self, parent, num_workers, process_count):
    super().__init__(parent)
    self._num_workers = num_workers
    self._process_count = process_count

  def __iter__(self):
    return _WorkerLayoutIterator(self._parent.__iter__(), self._num_workers, self._process_count)


def exit_with_parent(worker_index, worker_count):
  """Grain worker init: a daemon thread ends this worker once the training process is gone.
  After a SIGKILL nothing else stops the workers, and they would keep its pipes open."""
  del worker_index, worker_count
  parent = os.getppid()

  def watch():
    while os.getppid() == parent:
      time.sleep(1.0)
    os._exit(0)  # pylint: disable=protected-access

  threading.Thread(target=watch, daemon=True, name='exit_with_parent').start()


def prefetch(elements, num_workers, buffer_size=2):
  """``elements`` (a grain IterDataset) produced by ``num_workers`` processes in turn, in
  order (0: unchanged)."""
  if not num_workers:
    return elements
  if not flags.FLAGS.is_parsed():
    # grain's workers read absl flags; outside an absl app use their defaults.
    flags.FLAGS.mark_as_parsed()
  return elements.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers,
                                                           per_worker_buffer_size=buffer_size),
                              worker_init_fn=exit_with_parent)


def in_workers(batches, num_workers, process_count, buffer_size=2):
  """A stream's ``batches`` produced by ``num_workers`` processes (0: unchanged), their
  undecodable-record counts summed and the worker count kept in the iterator's state."""
  if not num_workers:
    return batches
  return _WorkerLayout(prefetch(batches, num_workers, buffer_size), num_workers, process_count)
