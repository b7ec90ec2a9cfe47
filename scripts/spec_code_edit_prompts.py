#!/usr/bin/env python3
"""spec_code_edit_prompts.py: code-editing prompts from kiln's own sources, for measuring
speculative decoding (issue 20; docs/speculative.md, docs/perf-notes.md).

Each prompt gives one real excerpt of a C file under src/ (a whole function of 15..45 lines), asks
for a small edit (rename one identifier that occurs several times in it, or change one numeric
constant), and asks for the complete edited code: the answer repeats most of the prompt, the case
where n-gram prompt lookup shines (a coding agent rewriting a file). Deterministic: the same tree
gives the same prompts. One JSON object a line: {"prompt": ..., "file": ..., "edit": ...}, the
format `kiln bench --speculative ... --prompts FILE` reads.

    python3 scripts/spec_code_edit_prompts.py [--root .] [--n 24] > /tmp/code_edit.jsonl
"""
import argparse
import hashlib
import json
import re
from pathlib import Path

KEYWORDS = set("""auto break case char const continue default do double else enum extern float for goto if
inline int long register restrict return short signed sizeof static struct switch typedef union unsigned
void volatile while size_t int32_t int64_t uint32_t uint64_t uint8_t NULL err rc i j k n e r s t p""".split())


def functions(text):
    """(start, end) line ranges of top-level function bodies: a line ending in '{' at column 0
    preceded by a signature line, up to the matching '}' at column 0."""
    lines = text.split("\n")
    out = []
    i = 0
    while i < len(lines):
        ln = lines[i]
        if ln and not ln[0].isspace() and ln.rstrip().endswith("{") and "(" in ln and not ln.startswith(("static const", "typedef", "struct", "enum")):
            j = i + 1
            while j < len(lines) and lines[j] != "}":
                j += 1
            if j < len(lines):
                out.append((i, j))
            i = j + 1
        else:
            i += 1
    return lines, out


def pick_edit(body):
    """A rename of an identifier used 3+ times, else a numeric constant change, else None."""
    ids = re.findall(r"\b[a-z_][a-z0-9_]{2,}\b", body)
    counts = {}
    for w in ids:
        if w not in KEYWORDS and not w.startswith("kiln_"):
            counts[w] = counts.get(w, 0) + 1
    # a local: declared in the body (a type, maybe a pointer star, then the name)
    declared = set(re.findall(r"\b(?:int|float|double|char|size_t|ssize_t|[a-z0-9_]+_t|kiln_[a-z0-9_]+|struct [a-z_]+)"
                              r"\s*\**\s*([a-z][a-z0-9_]{2,})\s*[=;,\[)]", body))
    cands = sorted((c, w) for w, c in counts.items() if 3 <= c <= 12 and w in declared)
    if cands:
        c, w = cands[len(cands) // 2]
        new = w + "_v2" if len(w) < 12 else "tmp_" + w[:6]
        return f"rename the identifier `{w}` to `{new}` everywhere in it", w
    m = re.search(r"\b([2-9][0-9]*)\b", body)
    if m:
        return f"change the constant {m.group(1)} to {int(m.group(1)) * 2}", m.group(1)
    return None, None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", default=str(Path(__file__).resolve().parents[1]))
    ap.add_argument("--n", type=int, default=24)
    a = ap.parse_args()
    # every part of the tree, in a fixed order that is not alphabetical (hash of the path)
    files = sorted(Path(a.root, "src").rglob("*.c"), key=lambda f: hashlib.sha256(str(f.relative_to(a.root)).encode()).hexdigest())
    made = 0
    for f in files:
        if made >= a.n:
            break
        lines, fns = functions(f.read_text(errors="replace"))
        for s, e in fns:
            if not 15 <= e - s + 1 <= 45:
                continue
            body = "\n".join(lines[s:e + 1])
            if len(body) > 2400:
                continue
            edit, what = pick_edit(body)
            if not edit:
                continue
            rel = f.relative_to(a.root)
            prompt = (f"Here is a C function from the file {rel}:\n\n```c\n{body}\n```\n\n"
                      f"Edit it: {edit}. Change nothing else. Reply with the complete edited function in one "
                      f"```c code block, and nothing else.")
            print(json.dumps({"prompt": prompt, "file": str(rel), "edit": edit}))
            made += 1
            break  # one function a file: more variety
    if made < a.n:
        raise SystemExit(f"only {made} prompts (wanted {a.n})")


if __name__ == "__main__":
    main()
