#!/usr/bin/env bash
# GPU check (issue 7): on a machine with a CUDA GPU and PyTorch installed, install this package
# without touching the installed torch, run the tests marked `gpu`, then print the benchmark ratios
# on the GPU.  Under 8 minutes on one GPU.  Usage, from the repository root:
#     bash benchmarks/gpu_check.sh            # PYTHON=python3 by default
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
$PY -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print('torch', torch.__version__, torch.cuda.get_device_name(0))"
# the package itself, no dependencies (torch, torchvision, numpy, pandas... come from the machine)
$PY -m pip install --quiet --no-deps --no-build-isolation -e . 2>&1 | tail -2 || PYTHONPATH=src
export PYTHONPATH=${PYTHONPATH:-}:$PWD/src:$PWD/tests
echo "== tests marked gpu"
timeout 240 $PY -m pytest -q -m gpu -p no:cacheprovider tests
echo "== benchmark on cuda"
timeout 300 $PY benchmarks/bench_dissect.py --device cuda --quick
