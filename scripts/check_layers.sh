#!/usr/bin/env bash
# check_layers.sh: the layering rule of README "Layout", over the sources' #include lines.
#
#   util < format < tokenizer < model < step, sample < backend < engine < server < cli
#
# A file under src/<layer>/ may include "<other>/..." only when <other> is its own layer or one
# below it; src/<layer>/ is found from the file's first folder (backend/cpu and backend/cuda are
# the backend layer). The build enforces the same rule at link time (a test links only its own
# layer's library). Besides, only src/cli reads the environment: getenv / secure_getenv anywhere
# else in src/ is an error (library behaviour is set through the options structs of kiln.h).
#   scripts/check_layers.sh [SRC_DIR]      exit 0: clean, 1: violations (printed), 2: usage
set -u
src=${1:-src}
[ -d "$src" ] || { echo "check_layers: no folder $src" >&2; exit 2; }
rank() {
    case $1 in
    util) echo 0 ;; format) echo 1 ;; tokenizer) echo 2 ;; model) echo 3 ;;
    step | sample | grammar) echo 4 ;; backend) echo 5 ;; engine) echo 6 ;; server) echo 7 ;; cli) echo 8 ;;
    *) echo -1 ;;
    esac
}
bad=0
while IFS= read -r f; do
    rel=${f#"$src"/}
    layer=${rel%%/*}
    r=$(rank "$layer")
    if [ "$r" -lt 0 ]; then
        echo "$f: folder '$layer' is not a layer (add it to scripts/check_layers.sh and README)"
        bad=1
        continue
    fi
    while IFS=: read -r line inc; do
        dep=${inc%%/*}
        d=$(rank "$dep")
        if [ "$d" -lt 0 ]; then continue; fi # "kiln.h", a sibling file, ...
        if [ "$d" -gt "$r" ]; then
            echo "$f:$line: $layer includes $inc from the $dep layer above it"
            bad=1
        fi
    done < <(grep -n -o '^[[:space:]]*#[[:space:]]*include[[:space:]]*"[^"]*"' "$f" | sed 's/:.*"\(.*\)"$/:\1/')
    if [ "$layer" != cli ] && grep -n -E '\b(secure_)?getenv[[:space:]]*\(' "$f" > /dev/null; then
        grep -n -E '\b(secure_)?getenv[[:space:]]*\(' "$f" | sed "s|^|$f:|; s|$|   <- getenv outside src/cli|"
        bad=1
    fi
done < <(find "$src" -type f \( -name '*.c' -o -name '*.h' -o -name '*.cu' -o -name '*.cuh' -o -name '*.inc' \) | sort)
[ "$bad" = 0 ] && echo "check_layers: $src follows the layering rule"
exit "$bad"
