#!/usr/bin/env bash
# Every GPU check that bench/RESULTS.md lists as owed, in one run, for a lent CUDA machine
# (about 8 minutes on one H200). Writes its logs into OUTDIR (default: bench/gpu-out):
#   env.txt    the machine, driver, torch and the packages used
#   tests.log  the layer tests parametrised over CUDA, batched decode on CUDA, the service on CUDA
#   benches.log  bench/gpu_decode.py, lena_overhead.py, viralnet_cost.py, queue_overhead.py
#   cli.log    `viraliency score` on CUDA against the CPU over the same files (and their CSVs)
#   load.md    bench/load.py with nvJPEG decode on and off, and batches not closed when idle
# Each step has its own time limit and runs whatever the previous one did, so one failure costs
# one log, not the run.
#
#   bash bench/gpu_run.sh [OUTDIR] [SECONDS_PER_LOAD_LEVEL]
# STEPS="tests cli" runs only those steps (env tests benches cli load); COUNT sets the number of
# images the CLI scores (1000), CLI_DEVICES where (cuda cpu), LOAD_VARIANTS which load runs
# (nvjpeg cpu-decode no-close-when-idle).
set -u
out=${1:-bench/gpu-out}
duration=${2:-6}
steps=" ${STEPS:-env tests benches cli load} "
count=${COUNT:-1000}
cli_devices=${CLI_DEVICES:-cuda cpu}
load_variants=${LOAD_VARIANTS:-nvjpeg cpu-decode no-close-when-idle}
want() { [[ $steps == *" $1 "* ]]; }
mkdir -p "$out"
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$(pwd) PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
stamp() { echo "== $(date -u +%H:%M:%S) $*"; }

want env && {
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
    nproc
    $py -c "import torch, torchvision; print(torch.__version__, torchvision.__version__, torch.cuda.get_device_name())"
} >"$out/env.txt" 2>&1

want tests && {
    stamp tests
    timeout 240 $py -m pytest -q -p no:cacheprovider tests/model/test_lena.py \
        tests/model/test_viralnet.py tests/model/test_viralnet_stn.py \
        tests/app/test_gpu_decode.py tests/app/test_cuda.py tests/app/test_cuda_graphs.py -rs
} >"$out/tests.log" 2>&1

want benches && {
    stamp gpu_decode
    timeout 90 $py bench/gpu_decode.py --device cuda --threads 16 --batch 1 8 32 64 128
    stamp lena_overhead
    timeout 60 $py bench/lena_overhead.py --device cuda
    stamp viralnet_cost
    timeout 60 $py bench/viralnet_cost.py --device cuda --batch 64 --reps 20
    stamp queue_overhead
    timeout 90 $py bench/queue_overhead.py --checkpoint weights --device cuda
} >"$out/benches.log" 2>&1

want cli && {
    stamp cli
    images=$(mktemp -d)
    $py - "$images" "$count" <<'EOF'
import sys
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np

def write(k):
    rng = np.random.default_rng(k)
    small = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
    image = cv2.resize(small, (640, 480), interpolation=cv2.INTER_CUBIC)
    cv2.imwrite(f"{sys.argv[1]}/{k:04d}.jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])

with ThreadPoolExecutor(16) as pool:
    list(pool.map(write, range(int(sys.argv[2]))))
EOF
    for device in $cli_devices; do
        stamp "score on $device"
        start=$(date +%s%N)
        timeout 120 $py -c "from cli.main import main; main()" score "$images" --device $device \
            --batch-size 64 --workers "$(nproc)" --no-progress --out "$out/cli-$device.csv" 2>&1 \
            | tail -3
        echo "$count images in $((($(date +%s%N) - start) / 1000000)) ms (start-up included)"
    done
    $py - "$out" <<'EOF'
import csv
import sys

import numpy as np

def scores(device):
    with open(f"{sys.argv[1]}/cli-{device}.csv") as f:
        return {row["path"]: float(row["score"]) for row in csv.DictReader(f)}

cuda, cpu = scores("cuda"), scores("cpu")
print(f"rows: cuda {len(cuda)}, cpu {len(cpu)}, same paths {cuda.keys() == cpu.keys()}")
diff = np.array([abs(cuda[p] - cpu[p]) for p in cpu if p in cuda])
print(f"|cuda - cpu| score: max {diff.max():.5f}, mean {diff.mean():.5f}")
EOF
} >"$out/cli.log" 2>&1
want load && {
    for variant in $load_variants; do
        stamp "load $variant"
        extra=()
        env_decode=true
        case $variant in
            cpu-decode) env_decode=false ;;
            no-close-when-idle) extra=(--no-close-when-idle) ;;
        esac
        VIRALIENCY_GPU_DECODE=$env_decode timeout 150 $py bench/load.py --checkpoint weights \
            --device cuda --clients 8 --concurrency 1 16 64 --duration "$duration" "${extra[@]}"
    done
} >"$out/load.md" 2>&1

stamp done
