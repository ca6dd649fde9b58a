#!/usr/bin/env bash
# One GPU session of the `device` tool, as a single prepared script (see CONTRIBUTING in README):
#   1. 1024 px speed figures on the GPU (benchmarks/speed.py, Pyro vs plain PyTorch, batch 1 and 4);
#   2. resume the embedded prior's training from training/fashion-mnist-32 on the GPU, two runs side
#      by side: A with the recipe's batch 32, B with batch 64 (StyleGAN2-ADA's small-data batch);
#   3. pack the training states, logs and snapshots into $OUT for the session to evaluate on the CPU.
# Needs: .whl/ (pyro-ppl, pyro-api, lpips wheels) and .data/ (the Fashion-MNIST .gz files), carried.
# Usage on the device machine: bash scripts/device_session.sh SECONDS   (total wall budget)
set -u
BUDGET=${1:-540}
T0=$(date +%s)
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  || { echo "wheel install failed"; exit 1; }
# The package as pyproject maps it (models/ and inference/ are brgm_pyro.models and .inference).
REPO=$PWD
mkdir -p /tmp/pkg && cp -r brgm_pyro /tmp/pkg/ && cp -r models /tmp/pkg/brgm_pyro/models \
  && cp -r inference /tmp/pkg/brgm_pyro/inference || exit 1
export PYTHONPATH=/tmp/site:/tmp/pkg BRGM_DATA_DIR=$PWD/.data PYTHONUNBUFFERED=1 OMP_NUM_THREADS=4
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, pyro, lpips; print('torch', torch.__version__, 'pyro', pyro.__version__, torch.cuda.get_device_name())" \
  || exit 1

echo "== speed, 1024 px (random config-f weights, LPIPS with a random VGG16)"
timeout 110 python3 benchmarks/speed.py --generator ffhq-1024 --perceptual lpips-random --device cuda \
  --batches 1 4 --steps 6 --repeats 2 2>&1 | tee "$OUT/speed-1024.txt"

left=$((BUDGET - ($(date +%s) - T0) - 45))
minutes=$(python3 -c "print(max($left, 30) / 60)")
echo "== training for $minutes minutes"
for spec in "A 32" "B 64"; do
  read -r run batch <<<"$spec"
  mkdir -p /tmp/run$run && cp $REPO/training/fashion-mnist-32/* /tmp/run$run/
  (cd /tmp && python3 -m brgm_pyro.cli train-prior --out /tmp/run$run --kimg 20000 --batch-size "$batch" \
    --max-minutes "$minutes" --checkpoint-kimg 50 --snapshot-kimg 100 --device cuda --quiet) > "$OUT/train$run.txt" 2>&1 &
done
sleep 60; nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader
wait
tail -n 3 "$OUT/trainA.txt" "$OUT/trainB.txt"

echo "== packing"
for run in A B; do
  cp /tmp/run$run/training-state.pt "$OUT/state$run.pt"
  # log, the latest generator and as many of the newest snapshots as fit in 15 MB
  python3 - "$run" "$OUT" <<'EOF'
import sys, tarfile
from pathlib import Path
run, out = sys.argv[1], Path(sys.argv[2])
folder = Path(f"/tmp/run{run}")
files = [folder / "log.jsonl", folder / "generator.safetensors"]
size = sum(f.stat().st_size for f in files)
for snap in sorted(folder.glob("generator-*.safetensors"), reverse=True):
    if size + snap.stat().st_size > 15e6:
        break
    files.append(snap)
    size += snap.stat().st_size
with tarfile.open(out / f"run{run}.tar", "w") as tar:
    for f in files:
        tar.add(f, arcname=f.name)
print(run, [f.name for f in files])
EOF
done
echo "total $(( $(date +%s) - T0 )) s"
