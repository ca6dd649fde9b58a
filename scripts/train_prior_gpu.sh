#!/usr/bin/env bash
# One prepared GPU training run of the Fashion-MNIST prior, on a machine where the package is not
# installed, with an optional NUTS convergence run on its spare CPU cores meanwhile:
#   1. installs the wheel files in WHEELS (default .whl/: the dependencies the machine lacks) offline,
#      and runs the package from a copy of the repository's folders;
#   2. GPU: the training runs of RUNS side by side, each "NAME:FOLDER:CHANNELS:BATCH": a copy of FOLDER
#      (a training state, e.g. training-state/fashion-mnist-32-wide; "-" starts from scratch) trained on by
#      `brgm train-prior` with --channel-max CHANNELS and --batch-size BATCH for the time left of
#      SECONDS, with a snapshot every SNAPSHOT_KIMG (compare them with benchmarks/compare_priors.py);
#   3. CPU: CHAINS NUTS chains (default 0: none) of `benchmarks/nuts.py NUTS_ARGS`, a process per chain
#      and core, pooled at the end with `benchmarks/nuts.py --merge`;
#   4. packs the training states, logs, snapshots and chains into OUT, most important first, in at
#      most 8 files of at most 15 MiB, 62 MiB in all (SNAPSHOT_MIB: the snapshots kept per run).
# Fashion-MNIST is read from DATA (default .data/, a folder of its four files) or the usual places.
#
# Usage, from the repository root: bash scripts/train_prior_gpu.sh [--dry-run] [SECONDS]   (default 480)
#   --dry-run checks the settings and prints the commands, running nothing (no GPU needed).
# A short run on a CPU: OUT=/tmp/try TRAIN_DEVICE=cpu CHAINS=2 \
#   NUTS_ARGS="--warmup 2 --num-samples 3 --max-tree-depth 2" bash scripts/train_prior_gpu.sh 150
set -u
DRY_RUN=0
if [ "${1:-}" = "--dry-run" ]; then DRY_RUN=1; shift; fi
BUDGET=${1:-480}
CHAINS=${CHAINS:-0}
RUNS=${RUNS:-W:training-state/fashion-mnist-32-wide:96:64}
SNAPSHOT_KIMG=${SNAPSHOT_KIMG:-100}
SNAPSHOT_MIB=${SNAPSHOT_MIB:-10}
TRAIN_DEVICE=${TRAIN_DEVICE:-cuda}
NUTS_ARGS=${NUTS_ARGS:---model learned-noise --task superres --warmup 120 --num-samples 150 --max-tree-depth 7 --init-jitter 1}
WHEELS=${WHEELS:-.whl}
DATA=${DATA:-.data}
OUT=${OUT:-/tmp/out}
T0=$(date +%s)

fail() { echo "train_prior_gpu.sh: $*" >&2; exit 2; }
is_count() { [[ "$1" =~ ^[0-9]+$ ]]; }
is_count "$BUDGET" && [ "$BUDGET" -gt 0 ] || fail "SECONDS must be a positive whole number of seconds, got '$BUDGET'."
is_count "$CHAINS" || fail "CHAINS must be a whole number (0: no NUTS chains), got '$CHAINS'."
is_count "$SNAPSHOT_KIMG" && [ "$SNAPSHOT_KIMG" -gt 0 ] || fail "SNAPSHOT_KIMG must be a positive whole number, got '$SNAPSHOT_KIMG'."
[[ "$TRAIN_DEVICE" =~ ^(cpu|cuda(:[0-9]+)?)$ ]] || fail "TRAIN_DEVICE must be cpu, cuda or cuda:N, got '$TRAIN_DEVICE'."
[ -f brgm_pyro/__init__.py ] || fail "run it from the repository root (no brgm_pyro/ here)."
[ -n "$RUNS" ] || fail "RUNS names no training run; give NAME:FOLDER:CHANNELS:BATCH."
for spec in $RUNS; do
  IFS=: read -r run folder channels batch extra <<<"$spec"
  [[ "$run" =~ ^[A-Za-z0-9_-]+$ ]] && [ -n "$batch" ] && [ -z "$extra" ] \
    || fail "the run '$spec' is not NAME:FOLDER:CHANNELS:BATCH (e.g. W:training-state/fashion-mnist-32-wide:96:64)."
  [ "$folder" = "-" ] || [ -d "$folder" ] || fail "the run $run starts from '$folder', which is not a folder; give one or '-'."
  is_count "$channels" && is_count "$batch" && [ "$channels" -gt 0 ] && [ "$batch" -gt 0 ] \
    || fail "the run $run needs positive whole CHANNELS and BATCH, got '$channels' and '$batch'."
done

# The commands, built once: printed by --dry-run, run otherwise.
train_command() {  # NAME CHANNELS BATCH MINUTES
  TRAIN=(python3 -m brgm_pyro.cli train-prior --out "/tmp/run$1" --kimg 20000 --batch-size "$3" --channel-max "$2"
         --max-minutes "$4" --checkpoint-kimg 20 --snapshot-kimg "$SNAPSHOT_KIMG" --device "$TRAIN_DEVICE" --quiet)
}
nuts_command() {  # K
  # NUTS_ARGS unquoted on purpose: it is split into its options.
  NUTS=(python3 benchmarks/nuts.py $NUTS_ARGS --chain "$1" --threads 1 --netcdf "$OUT/nuts/chain$1.nc"
        --json "$OUT/nuts/chain$1.json")
}
minutes_left() { python3 -c "print(max($BUDGET - ($(date +%s) - $T0) - 40, 30) / 60)"; }

if [ "$DRY_RUN" = 1 ]; then
  wheels=$(ls "$WHEELS"/*.whl 2>/dev/null | wc -l)
  echo "install: $wheels wheel files of $WHEELS/ into /tmp/site; the package from a copy of brgm_pyro/, models/, inference/"
  echo "data: ${DATA}$([ -d "$DATA" ] || echo ' (absent: the usual places)')"
  for k in $(seq 0 $((CHAINS - 1))); do nuts_command "$k"; echo "cpu: ${NUTS[*]}"; done
  for spec in $RUNS; do
    IFS=: read -r run folder channels batch <<<"$spec"
    train_command "$run" "$channels" "$batch" "$(minutes_left)"
    echo "gpu: (from $folder) ${TRAIN[*]}"
  done
  echo "out: $OUT"
  exit 0
fi

mkdir -p "$OUT/nuts"
if ls "$WHEELS"/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$WHEELS"/*.whl \
    || { echo "wheel install failed"; exit 1; }
fi
# The package as pyproject.toml maps it (models/ and inference/ are brgm_pyro.models and .inference).
REPO=$PWD
rm -rf /tmp/pkg && mkdir -p /tmp/pkg && cp -r brgm_pyro /tmp/pkg/ && cp -r models /tmp/pkg/brgm_pyro/models \
  && cp -r inference /tmp/pkg/brgm_pyro/inference || exit 1
export PYTHONPATH=/tmp/site:/tmp/pkg PYTHONUNBUFFERED=1
[ -d "$DATA" ] && BRGM_DATA_DIR=$(cd "$DATA" && pwd) && export BRGM_DATA_DIR
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null
nproc
python3 -c "import torch, pyro, lpips, arviz; print('torch', torch.__version__, 'pyro', pyro.__version__, 'arviz', arviz.__version__,
  torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU')" \
  || exit 1

if [ "$CHAINS" -gt 0 ]; then
  echo "== NUTS: $CHAINS chains on the CPU ($NUTS_ARGS)"
  for k in $(seq 0 $((CHAINS - 1))); do
    nuts_command "$k"
    CUDA_VISIBLE_DEVICES="" OMP_NUM_THREADS=1 timeout $((BUDGET - 20)) "${NUTS[@]}" > "$OUT/nuts/chain$k.txt" 2>&1 &
  done
fi

minutes=$(minutes_left)
echo "== training for $minutes minutes: $RUNS"
NAMES=""
for spec in $RUNS; do
  IFS=: read -r run folder channels batch <<<"$spec"
  NAMES="$NAMES $run"
  rm -rf "/tmp/run$run" && mkdir -p "/tmp/run$run"
  [ "$folder" != "-" ] && cp "$REPO/$folder"/* "/tmp/run$run/"
  train_command "$run" "$channels" "$batch" "$minutes"
  (cd /tmp && OMP_NUM_THREADS=1 "${TRAIN[@]}") > "$OUT/train$run.txt" 2>&1 &
done
sleep 90; nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader 2>/dev/null; uptime
wait
for run in $NAMES; do tail -n 3 "$OUT/train$run.txt"; tail -n 2 "/tmp/run$run/log.jsonl"; done
if [ "$CHAINS" -gt 0 ]; then
  for k in $(seq 0 $((CHAINS - 1))); do tail -n 12 "$OUT/nuts/chain$k.txt"; done
  python3 benchmarks/nuts.py --merge "$OUT"/nuts/chain*.nc --json "$OUT/nuts/merged.json" 2>&1 | tail -n 20
fi

echo "== packing into $OUT (at most 8 files of 15 MiB, 62 MiB in all)"
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
