"""The parts of the official DINO train step (PyTorch, CPU), each timed alone (median ms).

Run by ``dino_step_time.py --breakdown`` with ``PEER_PYTHON`` and ``PEER_DINO`` (the three
files of facebookresearch/dino: vision_transformer.py, utils.py, main_dino.py), at the size
``dino_step_time.py`` names. A measurement tool: it imports the peer's code, it holds none.
"""
import argparse
import os
import statistics
import sys
import time
import types

import torch

sys.path.insert(0, os.environ['PEER_DINO'])
try:       # main_dino imports torchvision at the top; nothing timed here uses it
  import torchvision  # pylint: disable=unused-import
except Exception:  # pylint: disable=broad-except
  stand_in = types.ModuleType('torchvision')
  for sub in ('datasets', 'transforms', 'models'):
    setattr(stand_in, sub, types.ModuleType('torchvision.' + sub))
    sys.modules['torchvision.' + sub] = getattr(stand_in, sub)
  sys.modules['torchvision'] = stand_in
import torch.distributed as dist  # pylint: disable=g-import-not-at-top
os.environ.setdefault('MASTER_ADDR', '127.0.0.1')
os.environ.setdefault('MASTER_PORT', '29534')
dist.init_process_group('gloo', rank=0, world_size=1)
import utils  # pylint: disable=g-import-not-at-top
import vision_transformer as vits  # pylint: disable=g-import-not-at-top
from main_dino import DINOLoss  # pylint: disable=g-import-not-at-top

parser = argparse.ArgumentParser()
parser.add_argument('--steps', type=int, default=15)
parser.add_argument('--ops', action='store_true',
                    help='torch.profiler of the encoder forward + backward, time per aten op')
args = parser.parse_args()
torch.set_num_threads(2)
torch.manual_seed(0)


def network():
  return utils.MultiCropWrapper(
      vits.VisionTransformer(img_size=[64], patch_size=8, embed_dim=192, depth=4, num_heads=3,
                             mlp_ratio=4, qkv_bias=True),
      vits.DINOHead(192, 4096, use_bn=False, norm_last_layer=True))


student, teacher = network(), network()
teacher.load_state_dict(student.state_dict())
for q in teacher.parameters():
  q.requires_grad = False
loss_fn = DINOLoss(4096, 2, 0.04, 0.04, 0, 10)
opt = torch.optim.AdamW(student.parameters(), lr=1e-4)
views = [torch.randn(64, 3, 64, 64) for _ in range(2)]
images = torch.cat(views)


def median_ms(fn):
  for _ in range(2):
    fn()
  times = []
  for _ in range(args.steps):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return 1000 * statistics.median(times)


def encoder_forward():
  with torch.no_grad():
    teacher.backbone(images)


def encoder_forward_backward():
  student.zero_grad()
  student.backbone(images).sum().backward()


def loss_forward():
  with torch.no_grad():
    loss_fn(student(views), teacher(views), 0)


def loss_forward_backward():
  student.zero_grad()
  with torch.no_grad():
    t = teacher(views)
  loss_fn(student(views), t, 0).backward()


def optimizer_step():
  opt.step()


def ema():
  with torch.no_grad():
    for ps, pt in zip(student.parameters(), teacher.parameters()):
      pt.mul_(0.996).add_(ps.detach(), alpha=0.004)


def whole_step():
  loss_forward_backward()
  opt.step()
  ema()


def op_profile(calls=5):
  """The encoder forward + backward under torch.profiler: self CPU ms per call of each op."""
  encoder_forward_backward()
  with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
    for _ in range(calls):
      encoder_forward_backward()
  rows = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
  total = sum(e.self_cpu_time_total for e in rows) / 1000 / calls
  print(f'  encoder forward + backward: {total:.1f} ms of ops per call (self CPU time)')
  for e in rows[:16]:
    ms = e.self_cpu_time_total / 1000 / calls
    print(f'    {e.key:44s} {ms:8.2f} ms {100 * ms / total:5.1f}%', flush=True)


if args.ops:
  op_profile()
  sys.exit(0)

for name, fn in (('encoder forward (teacher: 128 views, no grad)', encoder_forward),
                 ('encoder forward + backward', encoder_forward_backward),
                 ('loss forward (teacher + student + head + loss)', loss_forward),
                 ('loss forward + backward', loss_forward_backward),
                 ('optimizer (AdamW)', optimizer_step), ('EMA update', ema),
                 ('whole train step', whole_step)):
  print(f'  {name:48s} {median_ms(fn):8.1f}', flush=True)
