#!/usr/bin/env bash
# The whole pipeline on the embedded synthetic city, every stage as a user would run it by hand.
# Run through `make demo` (which sets up .venv and puts it first on PATH).
set -euo pipefail
cd "$(dirname "$0")/.."
DEMO_DIR=${DEMO_DIR:-outputs/demo}
WORKERS=${DEMO_WORKERS:-2}
MODEL_TYPE=${MODEL_TYPE:-hash}  # field backend of every cell: hash, vm, grid or mlp
GRID=(2 2)
DATASET=$DEMO_DIR/dataset
CONFIG=$DATASET/config.yaml
MASKS=$DEMO_DIR/masks
JOBS=parscripts/demo_cells.txt
started=$(date +%s)
stage() { echo; echo "=== [$(( $(date +%s) - started ))s] $*"; }

if [ -e "$DEMO_DIR" ]; then
  echo "error: $DEMO_DIR already exists; run 'make clean-demo' first or set DEMO_DIR" >&2
  exit 2
fi
mkdir -p "$DEMO_DIR"

stage "1/6 embedded scene -> $DATASET"
python scripts/make_synthetic_scene.py --output "$DATASET" --preset tiny --seed 0

stage "2/6 cluster masks, grid ${GRID[*]}, 2 processes (torch.distributed, gloo)"
OMP_NUM_THREADS=1 python -m torch.distributed.run --standalone --nproc_per_node 2 \
  scripts/create_cluster_masks.py --config "$CONFIG" --dataset_path "$DATASET" --output "$MASKS" \
  --grid_dim "${GRID[@]}"

stage "3/6 job list -> $JOBS"
python scripts/write_parscript.py --grid_dim "${GRID[@]}" --mask_path "$MASKS" --output "$JOBS" --overwrite \
  --extra_args "--model_type $MODEL_TYPE"

stage "4/6 train every cell ($MODEL_TYPE backend): parscript dispatcher, $WORKERS workers (chunks are written on each cell's first run)"
CONFIG_FILE=$CONFIG EXP_PREFIX=$DEMO_DIR/exp/cell DATASET_PATH=$DATASET CHUNK_PREFIX=$DEMO_DIR/chunks/cell \
  MASK_PATH=$MASKS python -m parscript.dispatcher "$JOBS" -g "$WORKERS"
failed=0
for cell in $(sed -n 's/^export CENTROID=\([0-9]*\);.*/\1/p' "$JOBS"); do
  [ -f "$DEMO_DIR/exp/cell-$cell/train_summary.json" ] || { echo "error: cell $cell did not finish; see above" >&2; failed=1; }
done
[ $failed = 0 ] || exit 1

stage "5/6 merge cells -> $DEMO_DIR/container.pt"
python scripts/merge_submodules.py --config_file "$CONFIG" --ckpt_prefix "$DEMO_DIR/exp/cell-" \
  --centroid_path "$MASKS/params.pt" --output "$DEMO_DIR/container.pt"

stage "6/6 evaluate, 2 processes"
OMP_NUM_THREADS=1 python -m torch.distributed.run --standalone --nproc_per_node 2 mega_nerf/eval.py \
  --config_file "$CONFIG" --exp_name "$DEMO_DIR/exp/eval" --dataset_path "$DATASET" \
  --container_path "$DEMO_DIR/container.pt" --output_path "$DEMO_DIR/eval"

python - "$DEMO_DIR" "$started" <<'PY'
import json, pathlib, sys, time
demo = pathlib.Path(sys.argv[1])
m = json.loads((demo / "eval" / "metrics.json").read_text())
cells = sorted(demo.glob("exp/cell-*/train_summary.json"))
bpr = [json.loads(p.read_text())["chunk_bytes_per_ray"] for p in cells]
print()
print("=== demo finished in %.0f s" % (time.time() - float(sys.argv[2])))
print(f"validation ({m['protocol_description']}), {m['images']} images:")
print(f"  PSNR  {m['psnr']['mean']:.2f} dB (std {m['psnr']['std']:.2f})")
print(f"  SSIM  {m['ssim']['mean']:.4f} (std {m['ssim']['std']:.4f})")
print(f"  LPIPS {m['lpips_status']}")
print(f"  {m['rays_per_second']:.0f} rays/s, {m['seconds_per_image']:.2f} s per image")
print(f"chunk bytes per ray: {', '.join(f'{b:.2f}' for b in bpr)}")
print(f"outputs: dataset {demo/'dataset'}, masks {demo/'masks'}, cells {demo/'exp'}, "
      f"container {demo/'container.pt'}, metrics {demo/'eval'/'metrics.json'}, images {demo/'eval'/'images'}")
PY
