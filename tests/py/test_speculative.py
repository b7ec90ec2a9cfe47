"""test_speculative.py: speculative decoding from the outside (issue 20): the kiln command's flags,
`kiln serve --speculative ngram` with the no_speculation request field and the vllm:spec_decode_*
counters on /metrics, and `kiln bench --speculative`.

The model: stories260K from ../shared (small and fast; its greedy output repeats itself, so
proposals get accepted); the tests skip loudly without it or without the binary. The numerical
checks of speculation (identical outputs over a request mix, preemption, aborts, the rejection
rule's distribution) are the C tests test_engine_spec and test_spec_stat.
"""
import json
import os
import re
import subprocess

import pytest

from serve_util import KILN, Srv, stories_args

PROMPT = "Once upon a time there was a cat. Once upon a time there was a cat. Once upon a time"


@pytest.fixture(scope="module")
def model_args():
    if not os.access(KILN, os.X_OK):
        pytest.skip(f"SKIP: kiln binary not found at {KILN}")
    a = stories_args()
    if not a:
        pytest.skip("SKIP: ../shared/models/stories260K absent")
    return a


def metric(text, name):
    m = re.search(r"^" + re.escape(name) + r"\{[^}]*\} (\S+)$", text, re.M)
    assert m, f"{name} missing from /metrics"
    return float(m.group(1))


def generate(model_args, *extra):
    r = subprocess.run([KILN, "generate", *model_args, "--prompt", PROMPT, "-n", "48", "--temperature", "0", "--ids",
                        *extra], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout.split("kiln generate:")[0].split()


def test_generate_same_ids(model_args):
    plain = generate(model_args)
    assert len(plain) == 48
    assert generate(model_args, "--speculative", "ngram") == plain
    assert generate(model_args, "--speculative", "ngram", "--num-speculative-tokens", "7",
                    "--ngram-prompt-lookup-max", "3", "--ngram-prompt-lookup-min", "1") == plain
    # the model itself as its own draft model
    assert generate(model_args, "--draft-model", model_args[1], "--num-speculative-tokens", "3") == plain


def test_bad_flags_refused(model_args):
    r = subprocess.run([KILN, "generate", *model_args, "--prompt", "x", "--speculative", "eagle"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "--speculative" in r.stderr
    r = subprocess.run([KILN, "generate", *model_args, "--prompt", "x", "--speculative", "ngram",
                        "--num-speculative-tokens", "99"], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "--num-speculative-tokens" in r.stderr
    r = subprocess.run([KILN, "generate", *model_args, "--prompt", "x", "--speculative", "ngram",
                        "--draft-model", model_args[1]], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "one proposer" in r.stderr


def test_serve_speculative_metrics_and_opt_out(model_args):
    srv = Srv(model_args, extra=["--speculative", "ngram", "--num-speculative-tokens", "4"])
    try:
        def complete(**kw):
            body = {"model": "kiln-test-model", "prompt": PROMPT, "max_tokens": 40, "temperature": 0, **kw}
            st, _, b = srv.request("POST", "/v1/completions", json.dumps(body), {"Content-Type": "application/json"})
            assert st == 200, b
            return json.loads(b)["choices"][0]["text"]

        def metrics():
            st, _, b = srv.request("GET", "/metrics")
            assert st == 200
            return b.decode()

        m0 = metrics()
        assert metric(m0, "vllm:spec_decode_num_drafts_total") == 0
        spec = complete()
        m1 = metrics()
        drafts = metric(m1, "vllm:spec_decode_num_drafts_total")
        proposed = metric(m1, "vllm:spec_decode_num_draft_tokens_total")
        accepted = metric(m1, "vllm:spec_decode_num_accepted_tokens_total")
        assert drafts > 0 and proposed >= drafts and 0 < accepted <= proposed
        assert metric(m1, "vllm:spec_decode_num_accepted_tokens_per_pos_total") > 0  # position 0
        # opted out: the same text, no new proposal
        plain = complete(no_speculation=True)
        assert plain == spec
        m2 = metrics()
        assert metric(m2, "vllm:spec_decode_num_drafts_total") == drafts
        # a bad value of the extension field is a 400, not a crash
        st, _, _ = srv.request("POST", "/v1/completions",
                               json.dumps({"model": "kiln-test-model", "prompt": "x", "no_speculation": "yes"}),
                               {"Content-Type": "application/json"})
        assert st == 400
    finally:
        srv.stop()


@pytest.mark.parametrize("how", [["--speculative", "ngram"], ["--draft-model", None, "--num-speculative-tokens", "3"]])
def test_bench_speculative(model_args, tmp_path, how):
    out = tmp_path / "b.json"
    how = [model_args[1] if a is None else a for a in how]
    r = subprocess.run([KILN, "bench", *model_args, *how, "--prompt-len", "32", "--max-tokens", "24",
                        "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "acceptance" in r.stdout and "outputs identical: yes" in r.stdout
    j = json.loads(out.read_text())
    # the plain run really is plain (one token a step: each prompt fits one prefill step), the
    # speculative one proposed
    assert j["plain_steps"] == j["gen_tokens"] and j["drafts"] > 0
    assert j["identical"] is True and j["draft_tokens"] >= j["accepted"] >= 0 and j["spec_steps"] <= j["plain_steps"]
