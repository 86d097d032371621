#!/usr/bin/env bash
# One command on an Apple-silicon Mac: install aip, run the macOS test set,
# and produce the table aip exists for, all into one results folder.
#
#   bash benchmarks/mac_check.sh [--out DIR] [--venv DIR | --python PY] [--frames N] [--model yolo11n.pt]
#   bash benchmarks/mac_check.sh --dry-run --python .venv/bin/python   # elsewhere: what can run there
#
# Steps (each one's output goes to DIR):
#   1. install: a fresh virtual environment (--venv, default .venv-mac-check)
#      with pip install '.[torch,onnx,ultralytics,video,coreml,test]'
#      (install.log); --python PY uses that interpreter's environment as it is.
#   2. machine.txt: the Mac's model, chip and macOS version.
#   3. tests: tests/macos (mps and coreml against cpu, a coreml+mps+cpu
#      pipeline, a default run, the macOS wait path, page-rounded segments)
#      and the multi-process ring stress tests (tests.log, tests.xml).
#   4. the table (benchmarks/mac_check.py): ANE, MPS and CPU each alone and
#      all together, calibrated, against ultralytics predict(stream=True) on
#      its Core ML export, FPS and p50/p99 (table.md, mac_check.json, table.log).
# The table is made even when a test fails; the exit status is the tests'.
#
# --dry-run (any OS): the Mac-only parts are left out (tests/macos skips,
# the stress tests are not run, the table has no Apple rows and no Core ML
# prediction) so that everything up to them is known to work.
set -euo pipefail

cd "$(dirname "$0")/.."
OUT="mac-check-$(date +%Y%m%d-%H%M%S)"
VENV=".venv-mac-check"
PY=""
FRAMES=300
MODEL=()
DRY_RUN=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --out) OUT="$2"; shift 2 ;;
    --venv) VENV="$2"; shift 2 ;;
    --python) PY="$2"; shift 2 ;;
    --frames) FRAMES="$2"; shift 2 ;;
    --model) MODEL=(--model "$2"); shift 2 ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
    *) echo "mac_check: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

if [[ "$(uname -s)" != Darwin && $DRY_RUN -eq 0 ]]; then
  echo "mac_check: this is $(uname -s), not macOS; --dry-run runs what can run here" >&2
  exit 2
fi
if [[ "$(uname -s)" == Darwin && "$(uname -m)" != arm64 ]]; then
  echo "mac_check: warning: $(uname -m) is not Apple silicon: no Neural Engine to measure" >&2
fi
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
echo "mac_check: results go to $OUT"

# 1. install
if [[ -z "$PY" ]]; then
  echo "mac_check: installing aip into $VENV (install.log)"
  python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install --upgrade pip > "$OUT/install.log" 2>&1
  "$VENV/bin/python" -m pip install '.[torch,onnx,ultralytics,video,coreml,test]' >> "$OUT/install.log" 2>&1 \
    || { tail -30 "$OUT/install.log" >&2; echo "mac_check: install failed, see $OUT/install.log" >&2; exit 1; }
  PY="$VENV/bin/python"
fi
"$PY" -c "import aip, sys; print('aip', aip.__file__, 'python', sys.version.split()[0])" | tee "$OUT/python.txt"

# 2. the machine
{
  if [[ "$(uname -s)" == Darwin ]]; then
    echo "model: $(sysctl -n hw.model)"
    echo "chip: $(sysctl -n machdep.cpu.brand_string)"
    sw_vers
    echo "memory_bytes: $(sysctl -n hw.memsize)"
  else
    echo "dry run on: $(uname -srm)"
  fi
  "$PY" -m aip backends
} | tee "$OUT/machine.txt"

# 3. the macOS test set (and the ring stress tests, which run the macOS wait path there)
TESTS=(tests/macos)
if [[ $DRY_RUN -eq 0 ]]; then
  TESTS+=(tests/stress/test_ring_processes.py tests/stress/test_wakeups.py)
fi
set +e
"$PY" -m pytest "${TESTS[@]}" -p no:cacheprovider -rs --junitxml="$OUT/tests.xml" 2>&1 | tee "$OUT/tests.log"
TESTS_RC=${PIPESTATUS[0]}
set -e

# 4. the table
DRY=()
if [[ $DRY_RUN -eq 1 ]]; then DRY=(--dry-run); fi
# ${A[@]+"${A[@]}"}: an empty array under set -u in macOS's bash 3.2
"$PY" benchmarks/mac_check.py --out "$OUT" --frames "$FRAMES" ${MODEL[@]+"${MODEL[@]}"} ${DRY[@]+"${DRY[@]}"} \
  2>&1 | tee "$OUT/table.log"
TABLE_RC=${PIPESTATUS[0]}

echo "mac_check: tests exit status $TESTS_RC, table exit status $TABLE_RC; results in $OUT"
if [[ $TESTS_RC -ne 0 ]]; then exit "$TESTS_RC"; fi
exit "$TABLE_RC"
