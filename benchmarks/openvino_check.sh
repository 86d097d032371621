#!/usr/bin/env bash
# One command on an Intel machine with an integrated GPU or an NPU (Core
# Ultra): install aip with OpenVINO, list the devices, run the OpenVINO
# tests, and measure every OpenVINO device as a worker, alone and together
# with the CPU, calibrated. NOT RUN YET: no such machine was at hand.
#
#   bash benchmarks/openvino_check.sh [OUT_DIR]
#
# OUT_DIR/devices.txt   what `aip backends` and `aip doctor` see
# OUT_DIR/tests.log     tests/integration/test_openvino.py and tests/stress/test_openvino_pipeline.py
# OUT_DIR/yolo.txt      python -m aip.bench yolo --only openvino (CPU rows, side by side)
# OUT_DIR/DEVICE.txt    per GPU/NPU device: aip run on the sample video with that device
#                       alone, then with the CPU worker beside it (calibrated; the subset
#                       search says whether the CPU worker stays)
set -euo pipefail

cd "$(dirname "$0")/.."
OUT="${1:-openvino-check-$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$OUT"
python3 -m venv .venv-openvino-check
PY=.venv-openvino-check/bin/python
.venv-openvino-check/bin/pip install '.[test]' > "$OUT/install.log" 2>&1

{ .venv-openvino-check/bin/aip backends; .venv-openvino-check/bin/aip doctor; } > "$OUT/devices.txt" 2>&1 || true
status=0
"$PY" -m pytest -q tests/integration/test_openvino.py tests/stress/test_openvino_pipeline.py > "$OUT/tests.log" 2>&1 || status=$?
"$PY" -m aip.bench yolo --only openvino --json "$OUT/yolo.json" > "$OUT/yolo.txt" 2>&1 || status=$?

devices=$("$PY" -c "import openvino; print(' '.join(d for d in openvino.Core().available_devices if d != 'CPU'))")
for device in $devices; do
  {
    echo "== $device alone"
    .venv-openvino-check/bin/aip run sample:300 -b "openvino:device=$device" --recalibrate --quiet
    echo "== $device with the CPU"
    .venv-openvino-check/bin/aip run sample:300 -b "openvino:device=$device" -b openvino --recalibrate --quiet
  } > "$OUT/$device.txt" 2>&1 || status=$?
done
echo "results in $OUT (devices: CPU ${devices:-and no GPU or NPU})"
exit "$status"
