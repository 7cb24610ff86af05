#!/usr/bin/env bash
# Wheels for a GPU machine whose image has jax, flax, optax, orbax-checkpoint, numpy, opencv,
# matplotlib, protobuf, etils, pyarrow, tensorstore, six and pytest but not the data stack, and no
# network: grain, tensorflow-datasets, array-record, ml-collections, clu, tensorboardX and what
# they need beyond that image, for CPython 3.12 on x86-64 Linux, into .whl/ (keep it out of git:
# echo /.whl/ >> .git/info/exclude). On the machine, from the repository root:
#
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
#   PYTHONPATH=/tmp/site:$PWD python3 benchmarks/accelerator.py ...
#
# Checked on this CPU (2026-12-04) in a Python 3.12 venv with jax 0.11.2, flax 0.12.12, numpy
# 2.5.2 and protobuf 7.36: `benchmarks/accelerator.py --tiny` ran every stage. ~11 MB.
set -euo pipefail
cd "$(dirname "$0")/.."
platforms=()
for p in manylinux_2_17 manylinux2014 manylinux_2_24 manylinux_2_27 manylinux_2_28 \
         manylinux_2_31 manylinux1; do
  platforms+=(--platform "${p}_x86_64")
done
mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp "${platforms[@]}" -d .whl \
  grain==0.2.18 tensorflow-datasets==4.9.10 array-record==0.8.6 ml-collections==1.1.0 \
  clu==0.0.12 tensorboardX==2.6.5 dm-tree==0.1.10 immutabledict==4.3.1 simple_parsing==0.1.9 \
  docstring-parser==0.18.0 tensorflow-metadata==1.21.0 googleapis-common-protos==1.76.0 \
  termcolor==3.3.0 toml==0.10.2 portpicker==1.6.0 importlib_resources==7.1.0
# promise (which tensorflow-datasets imports) is published as source only: build its wheel.
python3 -m pip wheel -q --no-deps -w .whl promise==2.3
ls .whl
