#!/bin/sh
# get_chat_templates.sh: the models' own chat templates (Jinja) that the chat oracle tests render
# with transformers, taken from the PyPI sdist of llama-cpp-python (pinned below), whose
# vendored llama.cpp keeps them under models/templates/ (Meta's Llama 3.1 / 3.2 / 3.3, Qwen2.5,
# Qwen3, Mistral ...). Nothing of it is committed here; the tests read the cache and skip loudly
# without it. Prints the directory. Idempotent: nothing is downloaded when it is filled.
# Env: KILN_CACHE (default $HOME/.cache/kiln), PIP (default: pip3, else python3 -m pip).
set -eu
VERSION=0.3.36
CACHE=${KILN_CACHE:-$HOME/.cache/kiln}
OUT="$CACHE/chat-templates-$VERSION"
if [ -s "$OUT/meta-llama-Llama-3.2-3B-Instruct.jinja" ]; then
    echo "$OUT"
    exit 0
fi
mkdir -p "$CACHE"
if [ -n "${PIP:-}" ]; then :
elif command -v pip3 >/dev/null 2>&1; then PIP=pip3
else PIP="python3 -m pip"; fi
TMP=$(mktemp -d "$CACHE/.dl.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
$PIP download --no-deps --no-binary :all: "llama-cpp-python==$VERSION" -d "$TMP" >&2
SDIST=$(ls "$TMP"/llama_cpp_python-*.tar.gz 2>/dev/null | head -n 1)
if [ -z "$SDIST" ]; then
    echo "get_chat_templates.sh: no llama-cpp-python sdist was downloaded" >&2
    exit 1
fi
mkdir -p "$TMP/x" "$TMP/t"
tar -xzf "$SDIST" -C "$TMP/x" --wildcards '*/vendor/llama.cpp/models/templates/*.jinja'
cp "$TMP"/x/*/vendor/llama.cpp/models/templates/*.jinja "$TMP/t/"
rm -rf "$OUT"
mv "$TMP/t" "$OUT"
echo "$OUT"
