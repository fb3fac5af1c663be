#!/usr/bin/env bash
# Downloads into .whl/ the wheels bench/gpu.sh needs on a GPU machine that has PyTorch but no registry access
# (the versions this checkout's .venv runs, for CPython 3.12 on x86-64 Linux). Carry .whl/ to that machine.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
NEEDED="lark pydantic pydantic-core annotated-types typing-inspection trl transformers datasets dill multiprocess
math-verify latex2sympy2-extended antlr4-python3-runtime"
mkdir -p .whl
for name in $NEEDED; do
  version=$(.venv/bin/python -m pip show "$name" 2>/dev/null | sed -n 's/^Version: //p')
  [ -n "$version" ] || { echo "not in .venv: $name" >&2; exit 1; }
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl "$name==$version"
done
du -sh .whl
