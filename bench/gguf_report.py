#!/usr/bin/env python3
"""gguf_report.py: the Python half of bench/gguf_vs_llamacpp.sh (issue 16 benchmark).

  gguf_report.py est SHAPE TYPE                       estimated file bytes of make_gguf_shape's output
  gguf_report.py gen MAKE_PY OUT SHAPE TYPE GGUF_PY [--exact-rng]
                                                      runs make_gguf_shape.py; by default with a faster
                                                      random source (see FastRng): same layout, same
                                                      block types and scales, other random bytes
  gguf_report.py weights FILE GGUF_PY OUT.json        bytes one decode step reads (from the tensor table)
  gguf_report.py bw OUT.json [GIB]                    GPU memory bandwidth with torch (read: sum; copy)
  gguf_report.py llama TABLE.txt OUT.json [LOG]       parses llama-batched-bench's Markdown (or jsonl) table
  gguf_report.py report RAW_DIR OUT_DIR               the JSON + Markdown report from RAW_DIR's pieces
  gguf_report.py set FILE.json KEY=VALUE...           sets keys of a JSON object (KEY+=VALUE appends to a list)

Only the standard library at the top; numpy / gguf / torch are imported by the commands that need them.
"""
import json
import os
import sys
import time

SHAPES = {  # H, I, L, NH, NKV, HD, V, tied (as in make_gguf_shape.py)
    "devstral": (5120, 32768, 40, 32, 8, 128, 131072, False),
    "smol": (576, 1536, 30, 9, 3, 64, 49152, True),
    "tiny": (256, 512, 2, 4, 2, 64, 1024, False),
}
BLK = {"q8_0": (32, 34), "q4_k": (256, 144), "q6_k": (256, 210)}  # weights per block, bytes per block
TYPES = ("q4_k_m", "q8_0", "q6_k")
# the criteria
FLOOR_MIN = 0.80      # decode at batch 1 >= 80% of the weight-bytes floor
B16_MIN = 1.5         # decode at batch 16 >= 1.5x llama.cpp's
PREFILL_MIN = 1.0     # prefill >= llama.cpp's at every batch size


def est_bytes(shape, qtype):
    H, I, L, NH, NKV, HD, V, tied = SHAPES[shape]

    def more_bits(l):
        return l < L // 8 or l >= 7 * L // 8 or (l - L // 8) % 3 == 2

    def mat(name, rows, cols, layer=-1):
        t = qtype
        if qtype == "q4_k_m":
            t = "q4_k"
            if name == "output" or (name in ("attn_v", "ffn_down") and more_bits(layer)):
                t = "q6_k"
        if qtype == "f16" or cols % BLK[t][0]:
            return rows * cols * 2
        return rows * (cols // BLK[t][0]) * BLK[t][1]

    n = V * H * 2 + H * 4  # f16 embedding, f32 output norm
    for l in range(L):
        n += 2 * H * 4
        n += mat("attn_q", NH * HD, H, l) + 2 * mat("attn_k", NKV * HD, H, l) + mat("attn_output", H, NH * HD, l)
        n += 2 * mat("ffn_gate", I, H, l) + mat("ffn_down", H, I, l)
    if not tied:
        n += mat("output", V, H)
    return n + 8 * 1024 * 1024  # header + vocabulary


class FastRng:
    """np.random.default_rng(seed) with a fast bytes(): the raw 64-bit output of the same bit
    generator (PCG64) instead of Generator.bytes, which goes through bounded integers and two
    copies (about 10x slower; on the Devstral shape minutes of the call's budget). The rest
    (standard_normal for the f16 tensors) is the Generator's own."""

    def __init__(self, g):
        self._g = g

    def bytes(self, n):
        import numpy as np
        return self._g.bit_generator.random_raw((n + 7) // 8).view(np.uint8)[:n]  # buffer for np.frombuffer

    def __getattr__(self, k):
        return getattr(self._g, k)


def cmd_gen(argv):
    import runpy
    make_py, out, shape, qtype, gguf_py = argv[:5]
    if "--exact-rng" not in argv:
        import numpy as np
        orig = np.random.default_rng
        np.random.default_rng = lambda *a, **k: FastRng(orig(*a, **k))
    sys.argv = [make_py, out, shape, qtype, gguf_py]
    t = time.time()
    runpy.run_path(make_py, run_name="__main__")
    print(f"gen {qtype} {shape}: {os.path.getsize(out) / 1e9:.2f} GB in {time.time() - t:.1f} s", flush=True)


def cmd_weights(argv):
    """Bytes one decode step reads from the file's weights: every tensor but the token embedding
    (a decode step gathers B of its rows; counted only when there is no output.weight, i.e. tied)."""
    path, gguf_py, out = argv[:3]
    sys.path.insert(0, gguf_py)
    from gguf import GGUFReader
    r = GGUFReader(path)
    by_type, total, embd, names = {}, 0, 0, set()
    for t in r.tensors:
        names.add(t.name)
        nb = int(t.n_bytes)
        if t.name == "token_embd.weight":
            embd = nb
            continue
        total += nb
        k = t.tensor_type.name
        by_type[k] = by_type.get(k, 0) + nb
    tied = "output.weight" not in names
    if tied:
        total += embd
    res = {"file": os.path.basename(path), "file_bytes": os.path.getsize(path), "step_bytes": total,
           "embedding_bytes": embd, "embedding_counted": tied, "step_bytes_by_type": by_type,
           "n_tensors": len(r.tensors)}
    json.dump(res, open(out, "w"), indent=2)
    print(f"weights {res['file']}: {total / 1e9:.3f} GB read per decode step ({by_type})", flush=True)


def cmd_bw(argv):
    out = argv[0]
    gib = float(argv[1]) if len(argv) > 1 else 8.0
    res = {"method": None}
    try:
        import torch
        if not torch.cuda.is_available():
            raise RuntimeError("torch sees no CUDA device")
        n = int(gib * (1 << 30)) // 2
        x = torch.ones(n, dtype=torch.bfloat16, device="cuda")
        ev = [torch.cuda.Event(enable_timing=True) for _ in range(2)]

        def best(fn, reps=8):
            fn()
            torch.cuda.synchronize()
            ts = []
            for _ in range(reps):
                ev[0].record()
                fn()
                ev[1].record()
                torch.cuda.synchronize()
                ts.append(ev[0].elapsed_time(ev[1]) / 1e3)
            return min(ts)

        nbytes = n * 2
        t_read = best(lambda: x.sum(dtype=torch.float32))
        half = n // 2  # copy: 1/2 of the buffer into the other half
        t_copy = best(lambda: x[half:2 * half].copy_(x[:half]))
        res = {"method": "torch: sum of a %.0f GiB bf16 tensor (read only), best of 8" % gib,
               "read_gbs": nbytes / t_read / 1e9,
               "copy_gbs": 2 * half * 2 / t_copy / 1e9,
               "copy_method": "torch copy_ of %.0f GiB to another place, (read + write bytes) / time, best of 8" % (gib / 2),
               "device": torch.cuda.get_device_name(0), "torch": torch.__version__}
    except Exception as e:  # no torch / no GPU: the report falls back to kiln's own probe
        res["error"] = f"{type(e).__name__}: {e}"
    json.dump(res, open(out, "w"), indent=2)
    print("bw:", json.dumps(res), flush=True)


def parse_llama(text):
    rows = []
    for line in text.splitlines():
        if line.lstrip().startswith("{"):  # --output-format jsonl
            try:
                d = json.loads(line)
                rows.append({"pp": d["pp"], "tg": d["tg"], "batch": d["pl"], "n_kv": d["n_kv"], "t_pp": d["t_pp"],
                             "s_pp": d["speed_pp"], "t_tg": d["t_tg"], "s_tg": d["speed_tg"]})
            except (ValueError, KeyError):
                pass
            continue
        f = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(f) != 10:
            continue
        try:
            v = [float(c) for c in f]
        except ValueError:
            continue  # header / ruler
        rows.append({"pp": int(v[0]), "tg": int(v[1]), "batch": int(v[2]), "n_kv": int(v[3]), "t_pp": v[4],
                     "s_pp": v[5], "t_tg": v[6], "s_tg": v[7]})
    return rows


def cmd_llama(argv):  # TABLE.txt OUT.json [STDERR.log]: the table may come on either stream
    rows = parse_llama("".join(open(p, errors="replace").read() for p in [argv[0]] + argv[2:] if os.path.exists(p)))
    json.dump(rows, open(argv[1], "w"), indent=2)
    print(f"llama.cpp rows: {len(rows)}", flush=True)


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def gb(x):
    return f"{x / 1e9:.3f} GB" if x >= 1e8 else f"{x / 1e6:.3f} MB"


def mark(ok):
    return "n/a" if ok is None else ("PASS" if ok else "FAIL")


def fmt(x, nd=1, suffix=""):
    return "-" if x is None else f"{x:,.{nd}f}{suffix}"


def type_report(raw, t, meta, bw):
    kj = load(os.path.join(raw, f"{t}.kiln.json"))
    lj = load(os.path.join(raw, f"{t}.llama.json"))
    wj = load(os.path.join(raw, f"{t}.weights.json"))
    status = load(os.path.join(raw, f"{t}.status.json")) or {}
    if kj is None and lj is None and wj is None and not status:
        return None
    bw_gbs, bw_src = None, None
    if bw and bw.get("read_gbs"):
        bw_gbs, bw_src = bw["read_gbs"], bw["method"]
    elif kj and kj.get("machine", {}).get("mem_bandwidth_gbs"):
        bw_gbs = kj["machine"]["mem_bandwidth_gbs"]
        bw_src = "kiln bench's own probe (%s)" % ("GPU copy, read + write" if kj.get("backend") == "cuda" else "host memory read")
    krows = {r["batch"]: r for r in (kj or {}).get("results", [])}
    lrows = {r["batch"]: r for r in (lj or [])}
    batches = sorted(set(krows) | set(lrows))
    rows = []
    for b in batches:
        k, l = krows.get(b), lrows.get(b)
        kp = k["prefill_tok_s"]["median"] if k else None
        kd = k["decode_tok_s"]["median"] if k else None
        lp = l["s_pp"] if l else None
        ld = l["s_tg"] if l else None
        pr = kp / lp if kp is not None and lp else None
        dr = kd / ld if kd is not None and ld else None
        row = {"batch": b, "kiln_prefill_tok_s": kp, "llamacpp_prefill_tok_s": lp, "prefill_ratio": pr,
               "kiln_decode_tok_s": kd, "llamacpp_decode_tok_s": ld, "decode_ratio": dr,
               "kiln_prefill_spread": [k["prefill_tok_s"]["min"], k["prefill_tok_s"]["max"]] if k else None,
               "kiln_decode_spread": [k["decode_tok_s"]["min"], k["decode_tok_s"]["max"]] if k else None,
               "prefill_pass": None if pr is None else pr >= PREFILL_MIN, "decode_pass": None}
        if b == 16 and dr is not None:
            row["decode_pass"] = dr >= B16_MIN
        rows.append(row)
    floor = None
    if wj and bw_gbs:
        ftok = bw_gbs * 1e9 / wj["step_bytes"]
        kd1 = krows[1]["decode_tok_s"]["median"] if 1 in krows else None
        ld1 = lrows[1]["s_tg"] if 1 in lrows else None
        floor = {"step_bytes": wj["step_bytes"], "step_bytes_by_type": wj["step_bytes_by_type"],
                 "bandwidth_gbs": bw_gbs, "bandwidth_method": bw_src, "floor_tok_s": ftok,
                 "kiln_decode_b1_tok_s": kd1, "kiln_fraction": kd1 / ftok if kd1 else None,
                 "llamacpp_decode_b1_tok_s": ld1, "llamacpp_fraction": ld1 / ftok if ld1 else None}
        floor["floor_pass"] = None if kd1 is None else kd1 / ftok >= FLOOR_MIN
        floor["ahead_pass"] = None if kd1 is None or ld1 is None else kd1 > ld1
        for r in rows:
            if r["batch"] == 1:
                r["decode_pass"] = floor["floor_pass"] if floor["ahead_pass"] is None else (
                    bool(floor["floor_pass"]) and floor["ahead_pass"])
    pp = [r["prefill_pass"] for r in rows]
    crit = {
        "b1_floor_80pct": floor["floor_pass"] if floor else None,
        "b1_ahead_of_llamacpp": floor["ahead_pass"] if floor else None,
        "b16_1.5x_llamacpp": next((r["decode_pass"] for r in rows if r["batch"] == 16), None),
        "prefill_ge_llamacpp_every_batch": None if not pp or any(p is None for p in pp) else all(pp),
    }
    return {"type": t, "file": (wj or {}).get("file"), "file_bytes": (wj or {}).get("file_bytes"),
            "status": status, "rows": rows, "floor": floor, "criteria": crit,
            "kiln": {k: kj.get(k) for k in ("kiln_version", "backend", "machine", "model", "config", "memory")} if kj else None}


def type_md(r, meta):
    t = r["type"]
    out = [f"## {t.upper()}" + (f" ({r['file']}, {gb(r['file_bytes'])})" if r.get("file_bytes") else ""), ""]
    for k, v in sorted(r["status"].items()):
        if v and v != "ok":
            out.append(f"- {k}: {v}")
    if any(v and v != "ok" for v in r["status"].values()):
        out.append("")
    out += ["| batch | kiln prefill tok/s | llama.cpp prefill tok/s (S_PP) | prefill ratio | prefill >= llama.cpp "
            "| kiln decode tok/s | llama.cpp decode tok/s (S_TG) | decode ratio | decode criterion |",
            "|---:|---:|---:|---:|:---:|---:|---:|---:|:---:|"]
    for x in r["rows"]:
        crit = {1: ">=80% floor, > llama.cpp", 16: ">= 1.5x"}.get(x["batch"])
        dm = f"{mark(x['decode_pass'])} ({crit})" if crit else ""
        out.append(f"| {x['batch']} | {fmt(x['kiln_prefill_tok_s'])} | {fmt(x['llamacpp_prefill_tok_s'])} | "
                   f"{fmt(x['prefill_ratio'], 2, 'x')} | {mark(x['prefill_pass'])} | "
                   f"{fmt(x['kiln_decode_tok_s'])} | {fmt(x['llamacpp_decode_tok_s'])} | "
                   f"{fmt(x['decode_ratio'], 2, 'x')} | {dm} |")
    f = r["floor"]
    out.append("")
    if f:
        byt = ", ".join(f"{k} {gb(v)}" for k, v in sorted(f["step_bytes_by_type"].items()))
        out.append(f"Batch-1 weight-bytes floor: {gb(f['step_bytes'])} read per decode step ({byt}; every tensor "
                   f"but the token embedding, of which a step reads one row; KV not counted) / {f['bandwidth_gbs']:.1f} GB/s "
                   f"({f['bandwidth_method']}) = **{f['floor_tok_s']:.1f} tok/s**. kiln: {fmt(f['kiln_decode_b1_tok_s'])} tok/s = "
                   f"**{fmt(100 * f['kiln_fraction'] if f['kiln_fraction'] else None)}%** of the floor "
                   f"({mark(f['floor_pass'])}, needs >= {100 * FLOOR_MIN:.0f}%); llama.cpp: "
                   f"{fmt(f['llamacpp_decode_b1_tok_s'])} tok/s = {fmt(100 * f['llamacpp_fraction'] if f['llamacpp_fraction'] else None)}%.")
    else:
        out.append("Batch-1 floor: not computed (no weight table or no bandwidth).")
    c = r["criteria"]
    out += ["", "Criteria: " + "; ".join(f"{k} {mark(v)}" for k, v in c.items()), ""]
    return out


def cmd_report(argv):
    raw, outdir = argv[:2]
    meta = load(os.path.join(raw, "meta.json")) or {}
    bw = load(os.path.join(raw, "bw.json"))
    types = meta.get("types") or list(TYPES)
    if isinstance(types, str):
        types = types.split(",")
    reps = [x for x in (type_report(raw, t, meta, bw) for t in types) if x]
    res = {"schema": "kiln.gguf_vs_llamacpp.v1", "meta": meta, "bandwidth": bw, "types": reps,
           "criteria_thresholds": {"b1_floor_fraction_min": FLOOR_MIN, "b16_decode_ratio_min": B16_MIN,
                                   "prefill_ratio_min": PREFILL_MIN},
           "written": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    with open(os.path.join(outdir, "gguf_vs_llamacpp.json"), "w") as f:
        json.dump(res, f, indent=2)
    md = ["# kiln vs llama.cpp on GGUF files (issue 16)", ""]
    md.append(f"**Card**: {meta.get('card', '?')}  ")
    md.append(f"**Time**: {meta.get('started', '?')} (start), report written {res['written']}  ")
    md.append(f"**Mode**: {meta.get('mode', '?')}; shape {meta.get('shape', '?')}; prompt {meta.get('prompt_len', '?')}, "
              f"{meta.get('decode_steps', '?')} decode steps; batches {meta.get('batches', '?')}; kiln backend "
              f"{meta.get('backend', '?')}, kiln --repeat {meta.get('repeat', '?')} (medians), llama.cpp one run per batch  ")
    md.append(f"**kiln**: {meta.get('kiln_version', '?')}; **llama.cpp**: {meta.get('llamacpp', '?')}  ")
    if bw and bw.get("read_gbs"):
        md.append(f"**Bandwidth (this call)**: read {bw['read_gbs']:.1f} GB/s ({bw['method']}); copy "
                  f"{bw['copy_gbs']:.1f} GB/s ({bw['copy_method']})  ")
    else:
        md.append(f"**Bandwidth (this call)**: no torch measure ({(bw or {}).get('error', 'not run')}); "
                  "the floor uses kiln bench's own probe  ")
    md += ["", "| type | b1 % of floor (>= 80%) | b1 vs llama.cpp (> 1) | b16 vs llama.cpp (>= 1.5x) | prefill >= llama.cpp at every batch |",
           "|---|---|---|---|---|"]
    for r in reps:
        f, c = r["floor"] or {}, r["criteria"]
        b1 = next((x for x in r["rows"] if x["batch"] == 1), {})
        b16 = next((x for x in r["rows"] if x["batch"] == 16), {})
        pmin = [x["prefill_ratio"] for x in r["rows"] if x["prefill_ratio"] is not None]
        md.append(f"| {r['type']} | {fmt(100 * f['kiln_fraction'] if f.get('kiln_fraction') else None, 1, '%')} {mark(c['b1_floor_80pct'])} "
                  f"| {fmt(b1.get('decode_ratio'), 2, 'x')} {mark(c['b1_ahead_of_llamacpp'])} "
                  f"| {fmt(b16.get('decode_ratio'), 2, 'x')} {mark(c['b16_1.5x_llamacpp'])} "
                  f"| min {fmt(min(pmin) if pmin else None, 2, 'x')} {mark(c['prefill_ge_llamacpp_every_batch'])} |")
    md.append("")
    for r in reps:
        md += type_md(r, meta)
    if meta.get("notes"):
        md += ["## Notes", ""] + [f"- {n}" for n in meta["notes"]] + [""]
    with open(os.path.join(outdir, "gguf_vs_llamacpp.md"), "w") as f:
        f.write("\n".join(md) + "\n")
    for r in reps:  # one Markdown file per type as well
        with open(os.path.join(outdir, f"{r['type']}.md"), "w") as f:
            f.write("\n".join(type_md(r, meta)) + "\n")


def cmd_set(argv):
    path = argv[0]
    d = load(path) or {}
    for kv in argv[1:]:
        k, _, v = kv.partition("=")
        if k.endswith("+"):
            d.setdefault(k[:-1], []).append(v)
        else:
            d[k] = v
    with open(path, "w") as f:
        json.dump(d, f, indent=2)


def main():
    if len(sys.argv) < 2:
        print(__doc__)
        sys.exit(2)
    c, a = sys.argv[1], sys.argv[2:]
    if c == "est":
        print(est_bytes(a[0], a[1]))
    elif c == "gen":
        cmd_gen(a)
    elif c == "weights":
        cmd_weights(a)
    elif c == "bw":
        cmd_bw(a)
    elif c == "llama":
        cmd_llama(a)
    elif c == "set":
        cmd_set(a)
    elif c == "report":
        cmd_report(a)
    else:
        print(__doc__)
        sys.exit(2)


if __name__ == "__main__":
    main()
