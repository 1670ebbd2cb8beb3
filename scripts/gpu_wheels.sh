#!/usr/bin/env bash
# Fill .whl/ with the wheels the lent GPU machine lacks, for its Python 3.12 (manylinux x86_64):
# run here, where pip reaches the registry; the machine has no network. `scripts/gpu_check.py`
# installs them there (pip --no-index --no-deps --target) when a package is missing; carry the
# folder: run(..., carry=[".whl"]). /.whl/ is in .gitignore, so it travels only when carried.
#
#   bash scripts/gpu_wheels.sh [DIR]          # DIR: .whl by default
#   PYVER=3.11 bash scripts/gpu_wheels.sh /tmp/whl311     # for another Python
#
# What that machine lacks (its package list: /work/.library/device/KINDS.md), with each one's
# dependencies that are not there either (`unzip -p W.whl '*/METADATA' | grep ^Requires-Dist`):
#   the server (nmt[serve], tests/test_serve.py): fastapi, starlette, pydantic, pydantic-core,
#     annotated-types, typing-inspection, opentelemetry-api (fastapi imports it), uvicorn;
#     typing-extensions too: pydantic 2.14 needs >= 4.16, the machine's version is not known
#   datasets (only --format hf and tests/test_corpus.py): datasets, dill, multiprocess
# Not carried: selenium (the browser test needs chromium as well, and skips itself without it).
# Already there: torch, numpy, sentencepiece, sacrebleu, typer, tqdm, pyyaml, matplotlib,
# prometheus-client, httpx, anyio, h11, click, annotated-doc, pyarrow, pandas, fsspec, xxhash,
# huggingface-hub, pytest, pytest-xdist, hypothesis.
#
# Each is pinned to the version this project's .venv holds (what CI tests with), where it has
# one; else the newest. One version of each: two of one package stop the whole install there.
set -euo pipefail
cd "$(dirname "$0")/.."

DIR=${1:-.whl}
PYVER=${PYVER:-3.12}
PIP_PYTHON=${PIP_PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
PACKAGES=(fastapi starlette pydantic pydantic-core annotated-types typing-inspection
          opentelemetry-api typing-extensions uvicorn datasets dill multiprocess)

pins=()
for name in "${PACKAGES[@]}"; do
    version=$("$PIP_PYTHON" -c 'import importlib.metadata as m, sys
try:
    print(m.version(sys.argv[1]))
except m.PackageNotFoundError:
    pass' "$name")
    pins+=("$name${version:+==$version}")
done

mkdir -p "$DIR"
rm -f "$DIR"/*.whl
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 \
         manylinux1_x86_64; do
    platforms+=(--platform "$p")
done
echo "downloading for Python $PYVER into $DIR/: ${pins[*]}"
"$PIP_PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" \
    --implementation cp "${platforms[@]}" -d "$DIR" "${pins[@]}"
ls -1 "$DIR"
du -sh "$DIR"
