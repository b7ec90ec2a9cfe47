"""bench/trace_steps.py on a Chrome trace written here in the layout of tools/cuda_trace's JSON:
which steps it picks (decode: the most common kernel count; prefill: the GPU-busiest), and the
per-kernel time a step it prints, against sums computed here from the same events."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / "bench" / "trace_steps.py"


def step(i, ts, dur, kernels, busy):
    return {"ph": "X", "cat": "step", "name": f"kiln_step {i}", "pid": 1, "tid": 1, "ts": ts, "dur": dur,
            "args": {"syncs": 1, "kernels": kernels, "gpu_busy_us": busy, "gap_max_us": 0.0}}


def kern(name, ts, dur):
    return {"ph": "X", "cat": "kernel", "name": name, "pid": 2, "tid": 7, "ts": ts, "dur": dur}


def make_trace(path):
    ev = [{"ph": "M", "name": "process_name", "pid": 1, "args": {"name": "CPU"}}]
    # step 0: a prefill (3 kernels, long); steps 1..4: decodes (2 kernels each, durations vary)
    ev.append(step(0, 0.0, 1000.0, 3, 900.0))
    ev += [kern("gemm_big", 10.0, 500.0), kern("attention_prefill", 520.0, 300.0), kern("norm", 830.0, 100.0)]
    t = 2000.0
    for i, (g, a) in enumerate([(40.0, 5.0), (42.0, 6.0), (44.0, 7.0), (46.0, 8.0)], start=1):
        ev.append(step(i, t, 100.0 + 2 * i, 2, g + a))
        ev += [kern("gemm_small", t + 1.0, g), kern("attention_decode", t + 1.0 + g, a)]
        t += 200.0
    # a kernel outside every step (load time) must not count
    ev.append(kern("dummy_fill", 5000.0, 999.0))
    # the runtime's API records share the file and are not kernels
    ev.append({"ph": "X", "cat": "runtime", "name": "cudaLaunchKernel", "pid": 1, "tid": 1, "ts": 2001.0, "dur": 3.0})
    path.write_text(json.dumps({"displayTimeUnit": "ns", "traceEvents": ev}))


def run(path, kind):
    r = subprocess.run([sys.executable, str(TOOL), str(path), "--kind", kind], capture_output=True, text=True,
                       check=True)
    lines = r.stdout.strip().splitlines()
    rows = {}
    for ln in lines[2:]:
        ms, pct, nps, avg, name = ln.split(None, 4)
        rows[name] = (float(ms), float(pct), float(nps), float(avg))
    return lines[0], rows


def test_decode_steps(tmp_path):
    p = tmp_path / "t.json"
    make_trace(p)
    head, rows = run(p, "decode")
    assert head.startswith("decode: 4 of 5 steps")
    assert "median step 0.105 ms" in head  # durations 102..108 us: median 105
    assert set(rows) == {"gemm_small", "attention_decode"}
    # printed: ms a step to 3 decimals, % to 1, launches a step to 1, the average launch to 0.1 us
    g_ms, g_pct, g_n, g_avg = rows["gemm_small"]
    assert abs(g_ms - 0.043) < 1e-9 and g_n == 1.0 and abs(g_avg - 43.0) < 1e-9
    a_ms, a_pct, a_n, a_avg = rows["attention_decode"]
    assert abs(a_ms - 0.0065) <= 5e-4 + 1e-12 and a_n == 1.0 and abs(a_avg - 6.5) < 1e-9
    assert abs(g_pct - 100.0 * 43.0 / 49.5) < 0.06 and abs(a_pct - 100.0 * 6.5 / 49.5) < 0.06


def test_prefill_step(tmp_path):
    p = tmp_path / "t.json"
    make_trace(p)
    head, rows = run(p, "prefill")
    assert head.startswith("prefill: 1 of 5 steps")
    assert set(rows) == {"gemm_big", "attention_prefill", "norm"}
    assert abs(rows["gemm_big"][0] - 0.5) < 1e-9 and abs(rows["norm"][3] - 100.0) < 1e-9


def test_no_steps_is_an_error(tmp_path):
    p = tmp_path / "t.json"
    p.write_text(json.dumps({"traceEvents": [kern("x", 0.0, 1.0)]}))
    r = subprocess.run([sys.executable, str(TOOL), str(p)], capture_output=True, text=True)
    assert r.returncode != 0 and "no kiln_step" in r.stderr
