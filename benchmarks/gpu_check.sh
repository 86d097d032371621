#!/usr/bin/env bash
# One command on a Linux machine with an NVIDIA GPU and PyTorch, network or
# not: install aip, run the CUDA tests, run the GPU benchmark, everything
# into one folder.
#
#   bash benchmarks/gpu_check.sh OUT [--wheels DIR] [--python PY] [--frames N] [--model yolo11n.pt]
#   bash benchmarks/gpu_check.sh OUT --dry-run [--python PY]   # no GPU: every step that runs without one
#   bash benchmarks/gpu_check.sh --print-source-hash           # what an aip wheel must have been built from
#
# Before: bash benchmarks/gpu_wheels.sh fills the wheel folder (default
# .gpu-wheels) where pip reaches the package index; the folder goes with the
# working tree to the GPU machine.
#
# Steps, each under a time limit (together at most about 7.7 minutes):
#   1. install (install.log), into a folder of its own put first on
#      PYTHONPATH (the interpreter's packages are never touched): from the
#      wheel folder, each of its third-party wheels whose distribution the
#      interpreter lacks; aip from its wheel there when it matches this
#      interpreter and these sources (SOURCE.sha256), else from the working
#      tree with pip --no-deps --no-build-isolation (scikit-build-core,
#      Cython and CMake from the machine), else with build isolation.
#   2. machine (machine.txt): date, nvidia-smi, python, torch, CUDA, cuDNN,
#      the versions of every package the run uses, `aip backends`.
#   3. tests (tests.log, tests.xml): tests/integration/test_cuda.py,
#      tests/stress/test_pipeline_cuda.py, the cuda test of
#      tests/integration/test_backends_real.py and the CPU-side tests of the tuning
#      options and the GPU benchmark, with AIP_REQUIRE_CUDA=1: without a GPU
#      the cuda tests fail instead of skipping (not in a dry run).
#   4. benchmark (bench.log, bench_yolo.json):
#      python -m aip.bench yolo --device cuda --json ... --time-budget ...
#      (--dry-run: the same plan with the cpu backend in place of cuda).
# Six files, flat in OUT. Exit status: the first failed step's, else 0.
set -uo pipefail

cd "$(dirname "$0")/.."
REPO="$(pwd)"

source_hash() {
  # The files an aip wheel is built from, by content: the same here and
  # wherever the working tree is copied (no git needed).
  find src CMakeLists.txt pyproject.toml -type f \
    \( -name '*.py' -o -name '*.pyx' -o -name '*.pxd' -o -name '*.pyi' -o -name '*.h' \
       -o -name 'py.typed' -o -name 'CMakeLists.txt' -o -name 'pyproject.toml' \) \
    -not -path '*/__pycache__/*' -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1
}

OUT=""
WHEELS=".gpu-wheels"
PY="python3"
FRAMES=400
MODEL=()
DRY_RUN=0
# Time limits (s) per step. The benchmark stops starting rows after
# BENCH_BUDGET, so it ends with its JSON written before BENCH_LIMIT.
INSTALL_LIMIT=90
MACHINE_LIMIT=30
TESTS_LIMIT=120
BENCH_LIMIT=220
BENCH_BUDGET=170
while [[ $# -gt 0 ]]; do
  case "$1" in
    --wheels) WHEELS="$2"; shift 2 ;;
    --python) PY="$2"; shift 2 ;;
    --frames) FRAMES="$2"; shift 2 ;;
    --model) MODEL=(--model "$2"); shift 2 ;;
    --dry-run) DRY_RUN=1; shift ;;
    --print-source-hash) source_hash; exit 0 ;;
    -h|--help) sed -n '2,32p' "$0"; exit 0 ;;
    -*) echo "gpu_check: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) if [[ -n "$OUT" ]]; then echo "gpu_check: one output folder, not $OUT and $1" >&2; exit 2; fi
       OUT="$1"; shift ;;
  esac
done
if [[ -z "$OUT" ]]; then echo "gpu_check: give the output folder (see --help)" >&2; exit 2; fi
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
SITE="$(mktemp -d "${TMPDIR:-/tmp}/aip-gpu-check.XXXXXX")"
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PIP_NO_INPUT=1 PIP_DISABLE_PIP_VERSION_CHECK=1
export PYTHONFAULTHANDLER=1
STATUS=0
STARTED=$SECONDS

note() { echo "gpu_check [$((SECONDS - STARTED)) s]: $*"; }
fail() { note "$1 failed (exit $2)"; if [[ $STATUS -eq 0 ]]; then STATUS=$2; fi; }
limited() {  # limited SECONDS CMD...: run with a time limit, killed 10 s after it
  local limit=$1; shift
  timeout --kill-after=10 "$limit" "$@"
  local rc=$?
  if [[ $rc -eq 124 || $rc -eq 137 ]]; then echo "gpu_check: time limit of $limit s reached: $*"; fi
  return $rc
}
note "results go to $OUT; packages go to $SITE"
if [[ $DRY_RUN -eq 1 ]]; then note "dry run: no GPU is needed, and no figure is a GPU figure"; fi

# 1. install ----------------------------------------------------------------------------
install_step() {
  local tag have wheel name dist
  tag="$("$PY" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')" || return 1
  echo "python: $("$PY" -c 'import sys; print(sys.executable, sys.version.split()[0])')"
  echo "wheel folder: $WHEELS"
  shopt -s nullglob
  local carried=()
  for wheel in "$WHEELS"/*.whl; do
    name="$(basename "$wheel")"
    dist="${name%%-*}"
    if [[ "$dist" == aip ]]; then continue; fi
    if have="$("$PY" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$dist" 2>/dev/null)"; then
      echo "have $dist $have: $name not installed"
    else
      carried+=("$wheel")
    fi
  done
  if [[ ${#carried[@]} -gt 0 ]]; then
    echo "installing ${carried[*]}"
    "$PY" -m pip install --no-index --no-deps --no-compile --target "$SITE" "${carried[@]}" || return 1
  fi
  local aip_wheels=("$WHEELS"/aip-*-"$tag"-*.whl)
  local want
  want="$(source_hash)"
  if [[ ${#aip_wheels[@]} -eq 1 && "$(cat "$WHEELS/SOURCE.sha256" 2>/dev/null)" == "$want" ]]; then
    echo "aip: the prebuilt ${aip_wheels[0]} (built from these sources: $want)"
    "$PY" -m pip install --no-index --no-deps --no-compile --target "$SITE" "${aip_wheels[0]}" && return 0
    echo "aip: the prebuilt wheel did not install; building from the working tree"
  elif [[ ${#aip_wheels[@]} -gt 0 ]]; then
    echo "aip: the prebuilt wheel was built from other sources or for another Python; building from the working tree"
  fi
  if "$PY" -c "import scikit_build_core, Cython" 2>/dev/null; then
    echo "aip: pip install --no-deps --no-build-isolation . (scikit-build-core and Cython of this machine)"
    "$PY" -m pip install --no-index --no-deps --no-build-isolation --no-compile --target "$SITE" "$REPO" && return 0
  fi
  echo "aip: pip install --no-deps . with build isolation (needs the package index)"
  "$PY" -m pip install --no-deps --no-compile --target "$SITE" "$REPO"
}
machine_step() {
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "host: $(uname -srm)"
  echo "cpus: $(nproc)"
  if command -v nvidia-smi > /dev/null; then
    nvidia-smi
    nvidia-smi --query-gpu=name,driver_version,memory.total,pcie.link.gen.max,pcie.link.width.max,clocks.max.sm \
      --format=csv
  else
    echo "nvidia-smi: not found"
  fi
  "$PY" - <<'PY'
import importlib.metadata as m, sys
print("python", sys.version.split()[0], sys.executable)
for dist in ("aip", "torch", "torchvision", "numpy", "numba", "llvmlite", "ultralytics", "ultralytics-thop",
             "onnxruntime", "onnx", "opencv-python-headless", "opencv-python", "nvidia-ml-py", "pytest",
             "pytest-timeout", "hypothesis"):
    try:
        print(f"{dist} {m.version(dist)}")
    except m.PackageNotFoundError:
        print(f"{dist} MISSING")
import aip
print("aip imported from", aip.__file__)
try:
    import torch
    print("torch cuda", torch.version.cuda, "available", torch.cuda.is_available(),
          "cudnn", torch.backends.cudnn.version())
    if torch.cuda.is_available():
        print("device", torch.cuda.get_device_name(0), torch.cuda.get_device_properties(0))
except Exception as error:  # report, never stop the run here
    print("torch:", type(error).__name__, error)
PY
  "$PY" -m aip backends
}
export -f install_step machine_step source_hash
export PY WHEELS SITE REPO

note "1/4 install (install.log)"
limited "$INSTALL_LIMIT" bash -c install_step > "$OUT/install.log" 2>&1
rc=$?
tail -5 "$OUT/install.log"
if [[ $rc -ne 0 ]]; then fail install "$rc"; fi
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"

# 2. the machine ------------------------------------------------------------------------
note "2/4 machine (machine.txt)"
limited "$MACHINE_LIMIT" bash -c machine_step > "$OUT/machine.txt" 2>&1
rc=$?
cat "$OUT/machine.txt"
if [[ $rc -ne 0 ]]; then fail machine "$rc"; fi

# 3. tests ------------------------------------------------------------------------------
note "3/4 tests (tests.log, tests.xml)"
TESTS=(tests/integration/test_cuda.py tests/stress/test_pipeline_cuda.py
       "tests/integration/test_backends_real.py::test_cuda_backend_is_available_exactly_where_torch_sees_a_gpu"
       tests/unit/test_torch_tuning.py tests/integration/test_torch_tuning_cpu.py
       tests/unit/test_bench_yolo_cuda.py tests/integration/test_bench_yolo_cuda_gpu.py)
if [[ $DRY_RUN -eq 1 ]]; then REQUIRE=0; else REQUIRE=1; fi
AIP_REQUIRE_CUDA=$REQUIRE limited "$TESTS_LIMIT" "$PY" -m pytest "${TESTS[@]}" -p no:cacheprovider -rs \
  --timeout 90 --junitxml="$OUT/tests.xml" > "$OUT/tests.log" 2>&1
rc=$?
tail -25 "$OUT/tests.log"
if [[ $rc -ne 0 ]]; then fail tests "$rc"; fi

# 4. the benchmark ----------------------------------------------------------------------
note "4/4 benchmark (bench.log, bench_yolo.json)"
DRY=()
if [[ $DRY_RUN -eq 1 ]]; then DRY=(--dry-run); FRAMES=16; fi
limited "$BENCH_LIMIT" "$PY" -m aip.bench yolo --device cuda --frames "$FRAMES" --time-budget "$BENCH_BUDGET" \
  --json "$OUT/bench_yolo.json" ${MODEL[@]+"${MODEL[@]}"} ${DRY[@]+"${DRY[@]}"} > "$OUT/bench.log" 2>&1
rc=$?
cat "$OUT/bench.log"
if [[ $rc -ne 0 ]]; then fail benchmark "$rc"; fi

rm -rf "$SITE"
note "done, exit status $STATUS; files: $(cd "$OUT" && echo *)"
exit "$STATUS"
