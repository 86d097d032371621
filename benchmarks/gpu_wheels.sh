#!/usr/bin/env bash
# Fill the wheel folder that benchmarks/gpu_check.sh installs from on a GPU
# machine without network. Run it where pip can reach the package index.
#
#   bash benchmarks/gpu_wheels.sh [--dir DIR] [--aip-python PY ...]
#
#   --dir DIR         the folder (default .gpu-wheels, which git ignores: it
#                     travels beside the working tree, never in a commit)
#   --aip-python PY   also build aip's own wheel with this interpreter; may be
#                     repeated (default: a CPython 3.12, the GPU machine's
#                     Python, on PATH or from pyenv). gpu_check.sh picks the wheel of its
#                     interpreter's version.
#
# 1. Every line of benchmarks/gpu_wheels.txt, for CPython 3.12 manylinux
#    x86-64, --no-deps (pip's cache serves what it holds).
# 2. aip's wheel per --aip-python, built from a copy of this working tree
#    (committed or not), repaired to a manylinux tag where auditwheel is at
#    hand, and SOURCE.sha256: the hash of the sources it was built from.
#    gpu_check.sh builds from the tree instead when they differ.
set -euo pipefail

cd "$(dirname "$0")/.."
DIR=".gpu-wheels"
PYTHONS=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dir) DIR="$2"; shift 2 ;;
    --aip-python) PYTHONS+=("$2"); shift 2 ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    *) echo "gpu_wheels: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
find_python312() {  # a CPython 3.12 that runs: on PATH, else one pyenv holds
  if python3.12 -c pass > /dev/null 2>&1; then command -v python3.12; return; fi
  if command -v pyenv > /dev/null; then
    local version
    version="$(pyenv versions --bare 2>/dev/null | grep -E '^3\.12(\.[0-9]+)?$' | tail -1)"
    if [[ -n "$version" ]]; then echo "$(pyenv prefix "$version")/bin/python3.12"; fi
  fi
}
if [[ ${#PYTHONS[@]} -eq 0 ]]; then
  PY312="$(find_python312)"
  if [[ -n "$PY312" ]]; then PYTHONS=("$PY312"); fi
fi
PIP_PY="$(command -v python3)"
if [[ -x .venv/bin/python ]]; then PIP_PY=.venv/bin/python; fi

mkdir -p "$DIR"
rm -f "$DIR"/*.whl "$DIR/SOURCE.sha256"

# 1. the third-party wheels
mapfile -t WANTED < <(sed -e 's/#.*//' -e 's/[[:space:]]//g' benchmarks/gpu_wheels.txt | grep -v '^$')
echo "gpu_wheels: downloading ${WANTED[*]}"
"$PIP_PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$DIR" "${WANTED[@]}"

# 2. aip itself, from a copy of the working tree (a build in place would touch
# the build/ folder of an editable install)
if [[ ${#PYTHONS[@]} -eq 0 ]]; then
  echo "gpu_wheels: no python3.12 here: no aip wheel; gpu_check.sh will build aip from the working tree"
fi
for PY in ${PYTHONS[@]+"${PYTHONS[@]}"}; do
  TREE="$(mktemp -d)"
  git ls-files -z --cached --others --exclude-standard -- src CMakeLists.txt pyproject.toml README.md \
    | xargs -0 -I{} cp --parents {} "$TREE"
  echo "gpu_wheels: building aip with $("$PY" -c 'import sys; print(sys.executable, sys.version.split()[0])')"
  "$PY" -m pip wheel --quiet --no-deps -w "$TREE/dist" "$TREE" > "$TREE/build.log" 2>&1 \
    || { tail -30 "$TREE/build.log" >&2; echo "gpu_wheels: building aip failed" >&2; exit 1; }
  BUILT=("$TREE"/dist/aip-*.whl)
  if "$PIP_PY" -m auditwheel --version > /dev/null 2>&1; then
    PATH="$(dirname "$PIP_PY"):$PATH" "$PIP_PY" -m auditwheel repair --wheel-dir "$DIR" "${BUILT[0]}" \
      > "$TREE/repair.log" 2>&1 || { tail -20 "$TREE/repair.log" >&2; exit 1; }
  else
    cp "${BUILT[0]}" "$DIR/"
  fi
  rm -rf "$TREE"
done
bash benchmarks/gpu_check.sh --print-source-hash > "$DIR/SOURCE.sha256"
ls -l "$DIR"
du -sh "$DIR"
