#!/usr/bin/env bash
# One GPU session of the `device` tool, as a single prepared script (see CONTRIBUTING in README).
# The GPU trains the embedded prior; the machine's spare CPU cores run NUTS chains meanwhile:
#   1. GPU, two training runs side by side (snapshots every 100 kimg, evaluated afterwards on the CPU
#      with benchmarks/compare_priors.py):
#        B: resume training/fashion-mnist-32 (batch 64);
#        W: a wider generator and discriminator from scratch (--channel-max $WIDE, batch 64),
#           to see whether capacity, rather than more images, gives better reconstructions;
#   2. CPU, $CHAINS NUTS chains of one run of benchmarks/nuts.py (a process per chain and core, no GPU), pooled
#      afterwards with `benchmarks/nuts.py --merge`; NUTS_ARGS picks the model, task and lengths;
#   3. pack the training states, logs, snapshots and chains into $OUT.
# Needs: .whl/ (pyro-ppl, pyro-api, lpips wheels) and .data/ (the Fashion-MNIST .gz files), carried.
# Usage on the device machine: bash scripts/device_session.sh SECONDS   (wall budget for steps 1-2)
# Dry run here: PATH=.venv/bin:$PATH OUT=/tmp/dry TRAIN_DEVICE=cpu CHAINS=2 \
#   NUTS_ARGS="--warmup 2 --num-samples 3 --max-tree-depth 2" bash scripts/device_session.sh 150
set -u
BUDGET=${1:-480}
CHAINS=${CHAINS:-12}
WIDE=${WIDE:-96}
TRAIN_DEVICE=${TRAIN_DEVICE:-cuda}   # cpu for a dry run of this script on a machine without a GPU
NUTS_ARGS=${NUTS_ARGS:---model learned-noise --task superres --warmup 120 --num-samples 150 --max-tree-depth 5 --init-jitter 1}
T0=$(date +%s)
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT/nuts"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  || { echo "wheel install failed"; exit 1; }
# The package as pyproject maps it (models/ and inference/ are brgm_pyro.models and .inference).
REPO=$PWD
mkdir -p /tmp/pkg && cp -r brgm_pyro /tmp/pkg/ && cp -r models /tmp/pkg/brgm_pyro/models \
  && cp -r inference /tmp/pkg/brgm_pyro/inference || exit 1
export PYTHONPATH=/tmp/site:/tmp/pkg BRGM_DATA_DIR=$PWD/.data PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
nproc
python3 -c "import torch, pyro, lpips, arviz; print('torch', torch.__version__, 'pyro', pyro.__version__, 'arviz', arviz.__version__,
  torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU')" \
  || exit 1

echo "== NUTS: $CHAINS chains on the CPU ($NUTS_ARGS)"
for k in $(seq 0 $((CHAINS - 1))); do
  CUDA_VISIBLE_DEVICES="" OMP_NUM_THREADS=1 timeout $((BUDGET - 20)) python3 benchmarks/nuts.py $NUTS_ARGS \
    --chain "$k" --threads 1 --netcdf "$OUT/nuts/chain$k.nc" --json "$OUT/nuts/chain$k.json" \
    > "$OUT/nuts/chain$k.txt" 2>&1 &
done

minutes=$(python3 -c "print(max($BUDGET - ($(date +%s) - $T0) - 40, 30) / 60)")
echo "== training for $minutes minutes"
mkdir -p /tmp/runB /tmp/runW && cp $REPO/training/fashion-mnist-32/* /tmp/runB/
for spec in "B 64" "W $WIDE"; do
  read -r run channels <<<"$spec"
  (cd /tmp && OMP_NUM_THREADS=1 python3 -m brgm_pyro.cli train-prior --out /tmp/run$run --kimg 20000 --batch-size 64 \
    --channel-max "$channels" --max-minutes "$minutes" --checkpoint-kimg 50 --snapshot-kimg 100 --device "$TRAIN_DEVICE" --quiet) \
    > "$OUT/train$run.txt" 2>&1 &
done
sleep 90; nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader; uptime
wait
tail -n 3 "$OUT/trainB.txt" "$OUT/trainW.txt"
for k in 0 1; do tail -n 12 "$OUT/nuts/chain$k.txt"; done
python3 benchmarks/nuts.py --merge "$OUT"/nuts/chain*.nc --json "$OUT/nuts/merged.json" 2>&1 | tail -n 20

echo "== packing (the tool brings back at most 8 files of 16 MiB, 64 MiB in all)"
cp "$OUT/trainB.txt" "$OUT/trainW.txt" "$OUT/nuts/"
python3 - "$OUT" <<'EOF'
import shutil, sys, tarfile
from pathlib import Path
out = Path(sys.argv[1])
MiB = 2**20

def pack(name, files):
    with tarfile.open(out / name, "w") as tar:
        for f in files:
            tar.add(f, arcname=f.name)
    return out / name

def run_files(run, cap):
    """log, latest generator and the newest snapshots that fit in cap bytes"""
    folder = Path(f"/tmp/run{run}")
    files = [folder / "log.jsonl", folder / "generator.safetensors"]
    size = sum(f.stat().st_size for f in files)
    for snap in sorted(folder.glob("generator-*.safetensors"), reverse=True):
        if size + snap.stat().st_size > cap:
            break
        files.append(snap)
        size += snap.stat().st_size
    return files

# in order of importance; whatever would pass 60 MiB or 8 files stays behind
wanted = [pack("nuts.tar", sorted((out / "nuts").iterdir())),
          pack("runB.tar", run_files("B", 8 * MiB)),
          pack("runW.tar", run_files("W", 14 * MiB))]
shutil.rmtree(out / "nuts")
for f in ("trainB.txt", "trainW.txt"):
    (out / f).unlink()
shutil.copy("/tmp/runB/training-state.pt", out / "stateB.pt")
wanted.append(out / "stateB.pt")
state = Path("/tmp/runW/training-state.pt").read_bytes()
for i in range(0, len(state), 15 * MiB):
    part = out / f"stateW.pt.part{i // (15 * MiB)}"
    part.write_bytes(state[i : i + 15 * MiB])
    wanted.append(part)
total = 0
for i, f in enumerate(wanted):
    total += f.stat().st_size
    if total > 60 * MiB or i >= 8:
        print("left behind:", f.name)
        f.unlink()
    else:
        print(f.name, round(f.stat().st_size / MiB, 1), "MiB")
EOF
echo "total $(( $(date +%s) - T0 )) s"
