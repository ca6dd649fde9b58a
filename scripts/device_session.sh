#!/usr/bin/env bash
# One GPU session of the `device` tool, as a single prepared script (see CONTRIBUTING in README).
# The GPU trains the embedded prior; spare CPU cores can run NUTS chains meanwhile:
#   1. GPU, the training runs in RUNS side by side, each "NAME:FOLDER:CHANNELS:BATCH": a copy of
#      FOLDER (a committed training state, e.g. training/fashion-mnist-32-wide) resumed with
#      --channel-max CHANNELS and --batch-size BATCH (an empty FOLDER, "-", starts from scratch).
#      Snapshots every SNAPSHOT_KIMG, evaluated afterwards on the CPU with benchmarks/compare_priors.py;
#   2. CPU, $CHAINS NUTS chains (default 0: none) of one run of benchmarks/nuts.py (a process per
#      chain and core, no GPU), pooled afterwards with `benchmarks/nuts.py --merge`;
#   3. pack the training states, logs, snapshots and chains into $OUT.
# Needs: .whl/ (pyro-ppl, pyro-api, lpips, arviz and their missing needs) and .data/ (the
# Fashion-MNIST files), carried.
# Usage on the device machine: bash scripts/device_session.sh SECONDS   (wall budget for steps 1-2)
# Dry run here: PATH=$PWD/.venv/bin:$PATH OUT=/tmp/dry TRAIN_DEVICE=cpu CHAINS=2 \
#   NUTS_ARGS="--warmup 2 --num-samples 3 --max-tree-depth 2" bash scripts/device_session.sh 150
set -u
BUDGET=${1:-480}
CHAINS=${CHAINS:-0}
RUNS=${RUNS:-W:training/fashion-mnist-32-wide:96:64}
SNAPSHOT_KIMG=${SNAPSHOT_KIMG:-100}
SNAPSHOT_MIB=${SNAPSHOT_MIB:-10}   # snapshots brought back per run, newest first
TRAIN_DEVICE=${TRAIN_DEVICE:-cuda}   # cpu for a dry run of this script on a machine without a GPU
NUTS_ARGS=${NUTS_ARGS:---model learned-noise --task superres --warmup 120 --num-samples 150 --max-tree-depth 7 --init-jitter 1}
T0=$(date +%s)
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT/nuts"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  || { echo "wheel install failed"; exit 1; }
# The package as pyproject maps it (models/ and inference/ are brgm_pyro.models and .inference).
REPO=$PWD
rm -rf /tmp/pkg && mkdir -p /tmp/pkg && cp -r brgm_pyro /tmp/pkg/ && cp -r models /tmp/pkg/brgm_pyro/models \
  && cp -r inference /tmp/pkg/brgm_pyro/inference || exit 1
export PYTHONPATH=/tmp/site:/tmp/pkg BRGM_DATA_DIR=$PWD/.data PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null
nproc
python3 -c "import torch, pyro, lpips, arviz; print('torch', torch.__version__, 'pyro', pyro.__version__, 'arviz', arviz.__version__,
  torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU')" \
  || exit 1

if [ "$CHAINS" -gt 0 ]; then
  echo "== NUTS: $CHAINS chains on the CPU ($NUTS_ARGS)"
  for k in $(seq 0 $((CHAINS - 1))); do
    CUDA_VISIBLE_DEVICES="" OMP_NUM_THREADS=1 timeout $((BUDGET - 20)) python3 benchmarks/nuts.py $NUTS_ARGS \
      --chain "$k" --threads 1 --netcdf "$OUT/nuts/chain$k.nc" --json "$OUT/nuts/chain$k.json" \
      > "$OUT/nuts/chain$k.txt" 2>&1 &
  done
fi

minutes=$(python3 -c "print(max($BUDGET - ($(date +%s) - $T0) - 40, 30) / 60)")
echo "== training for $minutes minutes: $RUNS"
NAMES=""
for spec in $RUNS; do
  IFS=: read -r run folder channels batch <<<"$spec"
  NAMES="$NAMES $run"
  rm -rf "/tmp/run$run" && mkdir -p "/tmp/run$run"
  [ "$folder" != "-" ] && cp "$REPO/$folder"/* "/tmp/run$run/"
  (cd /tmp && OMP_NUM_THREADS=1 python3 -m brgm_pyro.cli train-prior --out "/tmp/run$run" --kimg 20000 \
    --batch-size "$batch" --channel-max "$channels" --max-minutes "$minutes" --checkpoint-kimg 20 \
    --snapshot-kimg "$SNAPSHOT_KIMG" --device "$TRAIN_DEVICE" --quiet) > "$OUT/train$run.txt" 2>&1 &
done
sleep 90; nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader 2>/dev/null; uptime
wait
for run in $NAMES; do tail -n 3 "$OUT/train$run.txt"; tail -n 2 "/tmp/run$run/log.jsonl"; done
if [ "$CHAINS" -gt 0 ]; then
  for k in 0 1; do tail -n 12 "$OUT/nuts/chain$k.txt"; done
  python3 benchmarks/nuts.py --merge "$OUT"/nuts/chain*.nc --json "$OUT/nuts/merged.json" 2>&1 | tail -n 20
fi

echo "== packing (the tool brings back at most 8 files of 16 MiB, 64 MiB in all)"
python3 - "$OUT" "$SNAPSHOT_MIB" $NAMES <<'PY'
import shutil, sys, tarfile
from pathlib import Path
out, cap, names = Path(sys.argv[1]), float(sys.argv[2]), sys.argv[3:]
MiB = 2**20

def pack(name, files):
    with tarfile.open(out / name, "w") as tar:
        for f in files:
            tar.add(f, arcname=f.name)
    return out / name

wanted = []
if any((out / "nuts").iterdir()):
    wanted.append(pack("nuts.tar", sorted((out / "nuts").iterdir())))
shutil.rmtree(out / "nuts")
# in order of importance: each run's log, generator and newest snapshots, then its state in parts
for run in names:
    folder = Path(f"/tmp/run{run}")
    files = [f for f in (out / f"train{run}.txt", folder / "log.jsonl", folder / "generator.safetensors") if f.exists()]
    size = sum(f.stat().st_size for f in files)
    for snap in sorted(folder.glob("generator-*.safetensors"), reverse=True):
        if size + snap.stat().st_size > cap * MiB:
            break
        files.append(snap)
        size += snap.stat().st_size
    wanted.append(pack(f"run{run}.tar", files))
    (out / f"train{run}.txt").unlink()
for run in names:
    state_path = Path(f"/tmp/run{run}/training-state.pt")
    if not state_path.exists():
        print(f"run {run}: no training state")
        continue
    state = state_path.read_bytes()
    for i in range(0, len(state), 15 * MiB):
        part = out / f"state{run}.pt.part{i // (15 * MiB)}"
        part.write_bytes(state[i : i + 15 * MiB])
        wanted.append(part)
total = 0
for i, f in enumerate(wanted):
    total += f.stat().st_size
    if total > 62 * MiB or i >= 8:
        print("left behind:", f.name)
        f.unlink()
    else:
        print(f.name, round(f.stat().st_size / MiB, 1), "MiB")
PY
echo "total $(( $(date +%s) - T0 )) s"
