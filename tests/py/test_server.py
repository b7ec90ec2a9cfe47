"""test_server.py: `kiln serve` from outside, with the official `openai` client and `requests`.

The oracle for generated text is `kiln generate --temperature 0` (a separate code path: the CLI
drives the engine directly, one request at a time), and the published behaviour of the OpenAI /
vLLM APIs for shapes and statuses. Every server is started on a free port of 127.0.0.1 by a
fixture and stopped with SIGTERM (then SIGKILL) at the end; every wait is bounded.

Model: ../shared/models/tinystories-656K (completions). When its tokenizer cannot be loaded by this
build, the fixture falls back to stories260K (llama2.c format + tok512.bin) and says so; if neither
exists the tests skip loudly. Chat tests need a chat model (SmolLM2 GGUF from
scripts/get_default_model.sh, or env KILN_CHAT_MODEL) and skip loudly without one.
"""
import json
import os
import re
import signal
import subprocess
import threading
import time

import pytest

requests = pytest.importorskip("requests")
openai = pytest.importorskip("openai")

from serve_util import KILN, NAME, ROOT, SHARED, Srv, default_gguf


def _model_args_candidates():
    ts = SHARED / "models" / "tinystories-656K"
    st = SHARED / "models" / "stories260K"
    out = []
    if (ts / "config.json").exists():
        out.append(("tinystories-656K", ["--model", str(ts)]))
    if (st / "stories260K.bin").exists():
        out.append(("stories260K", ["--model", str(st / "stories260K.bin"), "--tokenizer", str(st / "tok512.bin")]))
    return out


def _probe(args):
    try:
        r = subprocess.run([KILN, "generate", *args, "--prompt", "Once", "-n", "1", "--temperature", "0"],
                           capture_output=True, timeout=60)
        return r.returncode == 0, r.stderr.decode(errors="replace")
    except (OSError, subprocess.TimeoutExpired) as e:
        return False, str(e)


@pytest.fixture(scope="session")
def model_args():
    if not os.path.exists(KILN):
        pytest.skip(f"SKIP: kiln binary not found at {KILN} (build it or set KILN_BIN)")
    cands = _model_args_candidates()
    if not cands:
        pytest.skip(f"SKIP: no test model under {SHARED}/models (tinystories-656K or stories260K)")
    why = []
    for name, args in cands:
        ok, err = _probe(args)
        if ok:
            if why:
                print(f"\nNOTE: using {name}; earlier candidates failed: {why}")
            return args
        why.append(f"{name}: {err.strip()[-200:]}")
    pytest.skip(f"SKIP: no test model runs with this build: {why}")


class Server(Srv):
    """serve_util's server on 127.0.0.1 (free port, SIGTERM stop), with an openai client."""

    def __init__(self, args, extra=()):
        super().__init__(args, extra)
        self.name = NAME

    def client(self, key="unused"):
        return openai.OpenAI(base_url=self.url + "/v1", api_key=key, max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def server(model_args):
    s = Server(model_args)
    yield s
    s.stop()
    assert s.proc.returncode == 0, "kiln serve did not exit cleanly on SIGTERM"


def greedy_ref(model_args, prompt, n):
    """`kiln generate` greedy text (its stdout ends with one newline of its own)."""
    r = subprocess.run([KILN, "generate", *model_args, "--prompt", prompt, "-n", str(n), "--temperature", "0"],
                       capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    out = r.stdout.decode("utf-8", errors="replace")
    return out[:-1] if out.endswith("\n") else out


def metrics(server):
    text = requests.get(server.url + "/metrics", timeout=10).text
    vals = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        m = re.match(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$', line)
        assert m, f"bad metrics line: {line!r}"
        labels = m.group(2) or ""
        fr = re.search(r'finished_reason="(\w+)"', labels)
        key = m.group(1) + (f"[{fr.group(1)}]" if fr else "")
        le = re.search(r'le="([^"]+)"', labels)
        if le:
            key += f"[le={le.group(1)}]"
        vals[key] = float(m.group(3))
    return vals


def wait_idle(server, timeout=10):
    deadline = time.time() + timeout
    m = metrics(server)
    while time.time() < deadline:
        m = metrics(server)
        if m["vllm:num_requests_running"] == 0 and m["vllm:num_requests_waiting"] == 0 and m["vllm:kv_cache_usage_perc"] == 0:
            return m
        time.sleep(0.05)
    return m


PROMPTS = ["Once upon a time", "The little dog", "Lily and Tom went to the park", "One day, a big bear",
           "The sun was hot", "There was a girl named Sue", "Ben had a red ball", "The cat sat"]


# ---- basic endpoints -------------------------------------------------------------------------

def test_health_models_metrics(server):
    r = requests.get(server.url + "/health", timeout=10)
    assert r.status_code == 200
    models = server.client().models.list()
    assert [m.id for m in models.data] == [server.name]
    r = requests.get(server.url + "/metrics", timeout=10)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/plain")
    m = metrics(server)
    for name in ["vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc",
                 "vllm:prompt_tokens_total", "vllm:generation_tokens_total",
                 "vllm:time_to_first_token_seconds_count", "vllm:inter_token_latency_seconds_count",
                 "vllm:e2e_request_latency_seconds_count", "vllm:request_success_total[stop]"]:
        assert name in m, name


def test_tokenize_detokenize(server):
    r = requests.post(server.url + "/tokenize", json={"prompt": "Once upon a time"}, timeout=10)
    assert r.status_code == 200
    body = r.json()
    assert body["count"] == len(body["tokens"]) > 0 and body["max_model_len"] > 0
    r = requests.post(server.url + "/detokenize", json={"tokens": body["tokens"]}, timeout=10)
    assert r.status_code == 200
    assert "Once upon a time" in r.json()["prompt"]


# ---- completions against `kiln generate` -----------------------------------------------------

@pytest.mark.parametrize("prompt", PROMPTS[:3])
def test_completion_greedy_equals_generate(server, model_args, prompt):
    n = 24
    ref = greedy_ref(model_args, prompt, n)
    c = server.client().completions.create(model=server.name, prompt=prompt, max_tokens=n, temperature=0)
    ch = c.choices[0]
    assert ch.text == ref
    assert c.object == "text_completion" and c.id.startswith("cmpl-")
    assert c.usage.completion_tokens <= n and c.usage.total_tokens == c.usage.prompt_tokens + c.usage.completion_tokens
    assert ch.finish_reason == ("length" if c.usage.completion_tokens == n else "stop")


def test_completion_stream_equals_whole(server, model_args):
    prompt, n = PROMPTS[1], 32
    ref = greedy_ref(model_args, prompt, n)
    stream = server.client().completions.create(model=server.name, prompt=prompt, max_tokens=n, temperature=0,
                                                stream=True, stream_options={"include_usage": True})
    text, finish, usage = "", None, None
    for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].text
            finish = chunk.choices[0].finish_reason or finish
        if chunk.usage:
            usage = chunk.usage
    assert text == ref
    assert finish in ("length", "stop") and usage is not None and usage.completion_tokens <= n


def test_sse_framing_raw(server):
    r = requests.post(server.url + "/v1/completions", timeout=60, stream=True,
                      json={"prompt": PROMPTS[0], "max_tokens": 8, "temperature": 0, "stream": True})
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/event-stream")
    raw = r.content.decode()
    events = raw.split("\n\n")
    assert events[-1] == "" and events[-2] == "data: [DONE]"
    for ev in events[:-2]:
        assert ev.startswith("data: ")
        obj = json.loads(ev[6:])
        assert obj["object"] == "text_completion" and len(obj["choices"]) == 1
    assert json.loads(events[-3][6:])["choices"][0]["finish_reason"] in ("length", "stop")


def test_completion_defaults_and_ids_prompt(server):
    r = requests.post(server.url + "/v1/completions", json={"prompt": PROMPTS[0], "temperature": 0}, timeout=60)
    assert r.status_code == 200
    assert r.json()["usage"]["completion_tokens"] <= 16  # vLLM's default max_tokens for completions
    ids = requests.post(server.url + "/tokenize", json={"prompt": PROMPTS[0]}, timeout=10).json()["tokens"]
    a = requests.post(server.url + "/v1/completions", json={"prompt": ids, "max_tokens": 10, "temperature": 0}, timeout=60).json()
    b = requests.post(server.url + "/v1/completions", json={"prompt": PROMPTS[0], "max_tokens": 10, "temperature": 0}, timeout=60).json()
    assert a["choices"][0]["text"] == b["choices"][0]["text"]
    assert a["usage"]["prompt_tokens"] == len(ids)


def test_stop_string(server, model_args):
    ref = greedy_ref(model_args, PROMPTS[0], 24)
    words = ref.split()
    assert len(words) >= 4, ref
    stop = " " + words[3]
    c = server.client().completions.create(model=server.name, prompt=PROMPTS[0], max_tokens=24, temperature=0, stop=[stop])
    assert c.choices[0].text == ref[:ref.index(stop)]
    assert c.choices[0].finish_reason == "stop"


def test_logprobs(server):
    c = server.client().completions.create(model=server.name, prompt=PROMPTS[0], max_tokens=6, temperature=0, logprobs=3)
    lp = c.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == c.usage.completion_tokens
    for tok_lp, top in zip(lp.token_logprobs, lp.top_logprobs):
        assert tok_lp <= 0 and 1 <= len(top) <= 3
        assert abs(max(top.values()) - tok_lp) < 1e-4  # greedy: the sampled token is the top one


def test_seeded_sampling_reproducible(server):
    kw = dict(model=server.name, prompt=PROMPTS[2], max_tokens=16, temperature=0.9, top_p=0.9, seed=1234)
    a = server.client().completions.create(**kw).choices[0].text
    b = server.client().completions.create(**kw).choices[0].text
    assert a == b


def test_unknown_fields_ignored(server):
    r = requests.post(server.url + "/v1/completions", timeout=60,
                      json={"prompt": PROMPTS[0], "max_tokens": 2, "frobnicate": {"x": 1}, "user": "u"})
    assert r.status_code == 200


# ---- concurrency -----------------------------------------------------------------------------

def test_32_concurrent_streams_equal_sequential(server):
    n_tok = 24
    prompts = [PROMPTS[i % len(PROMPTS)] + ("" if i < len(PROMPTS) else " " + "and" * (i // len(PROMPTS))) for i in range(32)]
    cl = server.client()
    seq = {}
    for p in set(prompts):
        seq[p] = cl.completions.create(model=server.name, prompt=p, max_tokens=n_tok, temperature=0).choices[0].text
    before = wait_idle(server)
    results, errors = [None] * 32, []
    barrier = threading.Barrier(32)

    def worker(i):
        try:
            c = server.client()
            barrier.wait(timeout=30)
            text, usage = "", None
            for chunk in c.completions.create(model=server.name, prompt=prompts[i], max_tokens=n_tok, temperature=0,
                                              stream=True, stream_options={"include_usage": True}):
                if chunk.choices:
                    text += chunk.choices[0].text
                if chunk.usage:
                    usage = chunk.usage
            results[i] = (text, usage)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors
    for i, p in enumerate(prompts):
        assert results[i] is not None
        assert results[i][0] == seq[p], f"stream {i} differs from its sequential result"
    after = wait_idle(server)
    gen = sum(r[1].completion_tokens for r in results)
    prompt_tok = sum(r[1].prompt_tokens for r in results)
    assert after["vllm:generation_tokens_total"] - before["vllm:generation_tokens_total"] == gen
    assert after["vllm:prompt_tokens_total"] - before["vllm:prompt_tokens_total"] == prompt_tok
    done = sum(after[f"vllm:request_success_total[{k}]"] - before[f"vllm:request_success_total[{k}]"] for k in ("stop", "length"))
    assert done == 32
    assert after["vllm:e2e_request_latency_seconds_count"] - before["vllm:e2e_request_latency_seconds_count"] == 32
    assert after["vllm:num_requests_running"] == 0 and after["vllm:kv_cache_usage_perc"] == 0


def test_client_disconnect_aborts(server):
    before = wait_idle(server)
    mml = requests.post(server.url + "/tokenize", json={"prompt": "x"}, timeout=10).json()["max_model_len"]
    r = requests.post(server.url + "/v1/completions", stream=True, timeout=60,
                      json={"prompt": PROMPTS[0], "max_tokens": mml - 16, "ignore_eos": True, "temperature": 0,
                            "stream": True})
    assert r.status_code == 200
    it = r.iter_lines()
    got = 0
    for line in it:
        if line.startswith(b"data: "):
            got += 1
            if got >= 2:
                break
    r.close()  # closes the socket: the server must notice and abort
    after = wait_idle(server, timeout=10)
    assert after["vllm:num_requests_running"] == 0
    assert after["vllm:kv_cache_usage_perc"] == 0
    assert after["vllm:request_success_total[abort]"] - before["vllm:request_success_total[abort]"] == 1
    gen = after["vllm:generation_tokens_total"] - before["vllm:generation_tokens_total"]
    assert gen < mml - 16, "the request ran to its end instead of being aborted"
    assert requests.get(server.url + "/health", timeout=10).status_code == 200


@pytest.fixture(scope="module")
def slow_server(model_args):
    """A server whose every step sleeps 20 ms (test hook), so a tiny model's request outlives
    the client's read timeout."""
    os.environ["KILN_TEST_STEP_DELAY_MS"] = "20"
    try:
        s = Server(model_args)
    finally:
        del os.environ["KILN_TEST_STEP_DELAY_MS"]
    yield s
    s.stop()


def test_client_disconnect_non_stream_aborts(slow_server):
    server = slow_server
    before = wait_idle(server)
    mml = requests.post(server.url + "/tokenize", json={"prompt": "x"}, timeout=10).json()["max_model_len"]
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.post(server.url + "/v1/completions", timeout=(5, 0.2),
                      json={"prompt": PROMPTS[0], "max_tokens": mml - 16, "ignore_eos": True, "temperature": 0})
    after = wait_idle(server, timeout=10)
    assert after["vllm:num_requests_running"] == 0 and after["vllm:kv_cache_usage_perc"] == 0
    assert after["vllm:request_success_total[abort]"] - before["vllm:request_success_total[abort]"] == 1
    assert after["vllm:request_success_total[length]"] == before["vllm:request_success_total[length]"]


# ---- bad input ---------------------------------------------------------------------------------

C, CH = "/v1/completions", "/v1/chat/completions"
MSG = [{"role": "user", "content": "hi"}]
TOOLS = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
BAD = [
    # (id, method, path, body (bytes or json), expected status, expected param or None)
    ("malformed-json", "POST", C, b"{", 400, None),
    ("not-json", "POST", C, b"not json", 400, None),
    ("array-body", "POST", C, b"[]", 400, None),
    ("empty-body", "POST", C, b"", 400, None),
    ("trailing-garbage", "POST", C, b'{"prompt": "hi"}garbage', 400, None),
    ("invalid-utf8", "POST", C, b'{"prompt": "\xff\xfe"}', 400, None),
    ("nul-in-string", "POST", C, b'{"prompt": "a\\u0000b"}', 400, None),
    ("duplicate-keys", "POST", C, b'{"prompt": "a", "prompt": "b"}', 400, None),
    ("prompt-number", "POST", C, {"prompt": 5}, 400, "prompt"),
    ("prompt-missing", "POST", C, {}, 400, "prompt"),
    ("prompt-empty-list", "POST", C, {"prompt": []}, 400, "prompt"),
    ("prompt-batch", "POST", C, {"prompt": ["a", "b"]}, 400, "prompt"),
    ("prompt-id-out-of-vocab", "POST", C, {"prompt": [1, 2, 99999999]}, 400, "prompt"),
    ("prompt-id-negative", "POST", C, {"prompt": [1, -1]}, 400, "prompt"),
    ("prompt-too-long", "POST", C, {"prompt": "Once upon a time " * 3000}, 400, "prompt"),
    ("max-tokens-negative", "POST", C, {"prompt": "hi", "max_tokens": -1}, 400, "max_tokens"),
    ("max-tokens-zero", "POST", C, {"prompt": "hi", "max_tokens": 0}, 400, "max_tokens"),
    ("max-tokens-string", "POST", C, {"prompt": "hi", "max_tokens": "16"}, 400, "max_tokens"),
    ("max-tokens-fraction", "POST", C, {"prompt": "hi", "max_tokens": 2.5}, 400, "max_tokens"),
    ("max-tokens-huge-real", "POST", C, {"prompt": "hi", "max_tokens": 1e30}, 400, "max_tokens"),
    ("max-tokens-huge-int", "POST", C, b'{"prompt": "hi", "max_tokens": 99999999999999999999999}', 400, None),
    ("max-tokens-over-context", "POST", C, {"prompt": "hi", "max_tokens": 100000}, 400, "max_tokens"),
    ("temperature-negative", "POST", C, {"prompt": "hi", "temperature": -1}, 400, "temperature"),
    ("temperature-string", "POST", C, {"prompt": "hi", "temperature": "hot"}, 400, "temperature"),
    ("temperature-overflow", "POST", C, b'{"prompt": "hi", "temperature": 1e999}', 400, None),
    ("temperature-bool", "POST", C, {"prompt": "hi", "temperature": True}, 400, "temperature"),
    ("top-p-zero", "POST", C, {"prompt": "hi", "top_p": 0}, 400, "top_p"),
    ("top-p-above-one", "POST", C, {"prompt": "hi", "top_p": 1.5}, 400, "top_p"),
    ("top-k-negative", "POST", C, {"prompt": "hi", "top_k": -5}, 400, "top_k"),
    ("min-p-two", "POST", C, {"prompt": "hi", "min_p": 2}, 400, "min_p"),
    ("presence-penalty", "POST", C, {"prompt": "hi", "presence_penalty": 3}, 400, "presence_penalty"),
    ("frequency-penalty", "POST", C, {"prompt": "hi", "frequency_penalty": -3}, 400, "frequency_penalty"),
    ("repetition-penalty-zero", "POST", C, {"prompt": "hi", "repetition_penalty": 0}, 400, "repetition_penalty"),
    ("n-two", "POST", C, {"prompt": "hi", "n": 2}, 400, "n"),
    ("best-of", "POST", C, {"prompt": "hi", "best_of": 3}, 400, "best_of"),
    ("logprobs-21", "POST", C, {"prompt": "hi", "logprobs": 21}, 400, "logprobs"),
    ("logprobs-bool", "POST", C, {"prompt": "hi", "logprobs": True}, 400, "logprobs"),
    ("stop-number", "POST", C, {"prompt": "hi", "stop": 5}, 400, "stop"),
    ("stop-mixed", "POST", C, {"prompt": "hi", "stop": ["a", 5]}, 400, "stop"),
    ("seed-string", "POST", C, {"prompt": "hi", "seed": "x"}, 400, "seed"),
    ("logit-bias-key", "POST", C, {"prompt": "hi", "logit_bias": {"abc": 1}}, 400, "logit_bias"),
    ("logit-bias-value", "POST", C, {"prompt": "hi", "logit_bias": {"1": 500}}, 400, "logit_bias"),
    ("stream-string", "POST", C, {"prompt": "hi", "stream": "yes"}, 400, "stream"),
    ("stream-options-no-stream", "POST", C, {"prompt": "hi", "stream_options": {"include_usage": True}}, 400, "stream_options"),
    ("unknown-model", "POST", C, {"prompt": "hi", "model": "nope"}, 404, "model"),
    ("model-number", "POST", C, {"prompt": "hi", "model": 5}, 400, "model"),
    ("response-format", "POST", C, {"prompt": "hi", "response_format": {"type": "xml"}}, 400, "response_format"),
    ("echo", "POST", C, {"prompt": "hi", "echo": True}, 400, "echo"),
    ("min-tokens-over-max", "POST", C, {"prompt": "hi", "min_tokens": 50, "max_tokens": 10}, 400, "min_tokens"),
    ("chat-empty-messages", "POST", CH, {"messages": []}, 400, "messages"),
    ("chat-messages-string", "POST", CH, {"messages": "hi"}, 400, "messages"),
    ("chat-bad-role", "POST", CH, {"messages": [{"role": "wizard", "content": "x"}]}, 400, "messages"),
    ("chat-no-content", "POST", CH, {"messages": [{"role": "user"}]}, 400, "messages"),
    ("chat-image-part", "POST", CH, {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}, 400, "messages"),
    ("chat-message-not-object", "POST", CH, {"messages": ["hi"]}, 400, "messages"),
    ("chat-n-two", "POST", CH, {"messages": MSG, "n": 2}, 400, "n"),
    ("chat-response-format", "POST", CH, {"messages": MSG, "response_format": {"type": "json_schema"}}, 400, "response_format"),
    ("chat-top-logprobs-alone", "POST", CH, {"messages": MSG, "top_logprobs": 3}, 400, "top_logprobs"),
    ("chat-tool-choice-required", "POST", CH, {"messages": MSG, "tool_choice": "required"}, 400, "tool_choice"),
    ("chat-tools-string", "POST", CH, {"messages": MSG, "tools": "x"}, 400, "tools"),
    ("chat-max-completion-tokens-neg", "POST", CH, {"messages": MSG, "max_completion_tokens": -5}, 400, "max_completion_tokens"),
    ("route-unknown-v1", "GET", "/v1/nope", None, 404, None),
    ("route-unknown", "GET", "/nope", None, 404, None),
    ("method-get-completions", "GET", C, None, 405, None),
    ("method-post-health", "POST", "/health", b"{}", 405, None),
    ("method-delete-models", "DELETE", "/v1/models", None, 405, None),
    ("model-unknown-get", "GET", "/v1/models/nope", None, 404, "model"),
    ("tokenize-bad", "POST", "/tokenize", {"prompt": 5}, 400, "prompt"),
    ("detokenize-bad", "POST", "/detokenize", {"tokens": [-1]}, 400, "tokens"),
    ("oversized-body", "POST", C, b'{"prompt": "' + b"a" * (9 << 20) + b'"}', 413, None),
]


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_bad_input(server, case):
    _, method, path, body, status, param = case
    data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
    r = requests.request(method, server.url + path, data=data, timeout=60,
                         headers={"Content-Type": "application/json"})
    assert r.status_code == status, r.text[:300]
    err = r.json()["error"]
    assert isinstance(err["message"], str) and err["message"]
    assert isinstance(err["type"], str) and err["code"] == status
    assert "param" in err
    if param:
        assert err["param"] == param, err


def test_health_after_bad_input(server):
    assert len(BAD) >= 40
    assert requests.get(server.url + "/health", timeout=10).status_code == 200
    c = server.client().completions.create(model=server.name, prompt=PROMPTS[0], max_tokens=4, temperature=0)
    assert c.usage.completion_tokens >= 1


def test_random_bodies_never_crash(server):
    """300 seeded mutations of valid bodies (byte flips, truncations, type swaps) on every POST route."""
    import random
    rng = random.Random(1234)
    seeds = [
        (C, {"prompt": "Once upon", "max_tokens": 3, "temperature": 0, "stop": ["x"], "logprobs": 1, "logit_bias": {"5": 1}}),
        (CH, {"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}], "max_tokens": 3, "tools": TOOLS}),
        ("/tokenize", {"prompt": "Once upon", "add_special_tokens": False}),
        ("/detokenize", {"tokens": [1, 2, 3]}),
    ]
    values = [None, True, -1, 0, 2 ** 63, -(2 ** 63), 1e308, "", "x" * 1000, [], {}, [1, "a"], {"a": None}]
    for i in range(300):
        path, body = seeds[i % len(seeds)]
        body = json.loads(json.dumps(body))
        if rng.random() < 0.5:
            key = rng.choice(list(body.keys()) + ["n", "top_k", "stream", "seed", "stream_options"])
            body[key] = rng.choice(values)
        raw = json.dumps(body).encode()
        if rng.random() < 0.5:
            b = bytearray(raw)
            for _ in range(rng.randint(1, 4)):
                b[rng.randrange(len(b))] = rng.randrange(256)
            raw = bytes(b[: rng.randint(0, len(b))]) if rng.random() < 0.3 else bytes(b)
        r = requests.post(server.url + path, data=raw, timeout=60, headers={"Content-Type": "application/json"})
        assert r.status_code in (200, 400, 404), (raw[:200], r.status_code, r.text[:200])
        if r.status_code != 200:
            assert r.json()["error"]["code"] == r.status_code
    assert requests.get(server.url + "/health", timeout=10).status_code == 200


def test_openai_client_errors(server):
    cl = server.client()
    with pytest.raises(openai.BadRequestError):
        cl.completions.create(model=server.name, prompt="hi", n=2)
    with pytest.raises(openai.NotFoundError):
        cl.completions.create(model="nope", prompt="hi")


# ---- auth, queue, shutdown (servers of their own) -------------------------------------------

def test_api_key(model_args):
    s = Server(model_args, ["--api-key", "sekret"])
    try:
        assert requests.get(s.url + "/v1/models", timeout=10).status_code == 401
        r = requests.get(s.url + "/v1/models", headers={"Authorization": "Bearer wrong"}, timeout=10)
        assert r.status_code == 401 and r.json()["error"]["code"] == 401
        with pytest.raises(openai.AuthenticationError):
            s.client("wrong").models.list()
        assert s.client("sekret").models.list().data[0].id == s.name
        c = s.client("sekret").completions.create(model=s.name, prompt="Once", max_tokens=2)
        assert c.usage.completion_tokens >= 1
        assert requests.get(s.url + "/health", timeout=10).status_code == 200  # health needs no key
    finally:
        s.stop()


def test_queue_full_503(model_args):
    s = Server(model_args, ["--max-num-seqs", "1", "--max-queue", "1"])
    try:
        mml = requests.post(s.url + "/tokenize", json={"prompt": "x"}, timeout=10).json()["max_model_len"]
        long = {"prompt": "Once", "max_tokens": mml - 8, "ignore_eos": True, "stream": True}
        held = [requests.post(s.url + "/v1/completions", json=long, stream=True, timeout=60) for _ in range(2)]
        assert all(h.status_code == 200 for h in held)
        r = requests.post(s.url + "/v1/completions", json={"prompt": "Once", "max_tokens": 2}, timeout=60)
        assert r.status_code == 503, r.text
        assert r.headers.get("Retry-After") and r.json()["error"]["code"] == 503
        for h in held:
            h.close()
        deadline = time.time() + 20
        while time.time() < deadline:
            r = requests.post(s.url + "/v1/completions", json={"prompt": "Once", "max_tokens": 2}, timeout=60)
            if r.status_code == 200:
                break
            time.sleep(0.1)
        assert r.status_code == 200
    finally:
        s.stop()


def test_sigterm_drains_in_flight(model_args):
    s = Server(model_args)
    try:
        n = 200
        r = requests.post(s.url + "/v1/completions", stream=True, timeout=120,
                          json={"prompt": "Once", "max_tokens": n, "ignore_eos": True, "stream": True,
                                "stream_options": {"include_usage": True}})
        assert r.status_code == 200
        lines = r.iter_lines()
        first = next(l for l in lines if l.startswith(b"data: "))
        s.proc.send_signal(signal.SIGTERM)
        rest = [l for l in lines if l.startswith(b"data: ")]
        assert rest[-1] == b"data: [DONE]"
        usage = json.loads(rest[-2][6:])["usage"]
        assert usage["completion_tokens"] == n  # finished, not cut off
        assert s.proc.wait(timeout=30) == 0
        assert first
    finally:
        s.stop()


# ---- chat (needs a chat model) -----------------------------------------------------------------

def _chat_model():
    env = os.environ.get("KILN_CHAT_MODEL")
    if env and os.path.exists(env):
        return env
    g = default_gguf()  # KILN_DEFAULT_GGUF (scripts/test.sh), else the cache
    if g:
        return g
    for base in (SHARED / "models", ROOT / "models"):
        if base.exists():
            for p in sorted(base.rglob("SmolLM2*.gguf")):
                return str(p)
    return None


@pytest.fixture(scope="module")
def chat_server():
    path = _chat_model()
    if not path:
        pytest.skip("SKIP: no chat model (SmolLM2 GGUF via scripts/get_default_model.sh, or KILN_CHAT_MODEL)")
    if not os.path.exists(KILN):
        pytest.skip(f"SKIP: kiln binary not found at {KILN}")
    try:
        s = Server(["--model", path])
    except RuntimeError as e:
        if "not supported yet" in str(e) or "not implemented" in str(e):
            pytest.skip(f"SKIP: this build cannot load the chat model yet: {str(e)[-200:]}")
        raise
    r = requests.post(s.url + "/v1/chat/completions", json={"messages": MSG, "max_tokens": 1}, timeout=120)
    if r.status_code != 200:
        s.stop()
        pytest.skip(f"SKIP: chat formats not available in this build: {r.text[:200]}")
    yield s
    s.stop()


def test_chat_whole_and_stream(chat_server):
    cl = chat_server.client()
    msgs = [{"role": "system", "content": "You are brief."}, {"role": "user", "content": "Name a color."}]
    c = cl.chat.completions.create(model=chat_server.name, messages=msgs, max_tokens=16, temperature=0)
    assert c.object == "chat.completion" and c.choices[0].message.role == "assistant"
    text = c.choices[0].message.content
    assert c.usage.completion_tokens >= 1
    parts, first_role = [], None
    for chunk in cl.chat.completions.create(model=chat_server.name, messages=msgs, max_tokens=16, temperature=0,
                                            stream=True):
        if chunk.choices:
            d = chunk.choices[0].delta
            first_role = first_role or d.role
            parts.append(d.content or "")
    assert first_role == "assistant" and "".join(parts) == text


def test_chat_logprobs_and_content_parts(chat_server):
    cl = chat_server.client()
    msgs = [{"role": "user", "content": [{"type": "text", "text": "Say hi."}]}]
    c = cl.chat.completions.create(model=chat_server.name, messages=msgs, max_tokens=4, temperature=0,
                                   logprobs=True, top_logprobs=2)
    content = c.choices[0].logprobs.content
    assert len(content) == c.usage.completion_tokens
    for e in content:
        assert e.logprob <= 0 and len(e.top_logprobs) <= 2


@pytest.mark.parametrize("prompt", ["The capital of France is", "def fibonacci(n):"])
def test_chat_model_completion_equals_generate(chat_server, prompt):
    """On the SmolLM2 chat model: a greedy completion, whole and streamed, equals `kiln generate`."""
    n = 24
    ref = greedy_ref(["--model", _chat_model()], prompt, n)
    cl = chat_server.client()
    c = cl.completions.create(model=chat_server.name, prompt=prompt, max_tokens=n, temperature=0)
    assert c.choices[0].text == ref
    text = "".join(ch.choices[0].text for ch in cl.completions.create(model=chat_server.name, prompt=prompt,
                                                                      max_tokens=n, temperature=0, stream=True)
                   if ch.choices)
    assert text == ref


def test_chat_answer_coherent_and_equals_kiln_chat(chat_server):
    """A simple question gets a coherent answer (it names Paris), streamed and not, and the server's
    greedy answer equals `kiln chat`'s for the same message."""
    q = "What is the capital of France?"
    cl = chat_server.client()
    c = cl.chat.completions.create(model=chat_server.name, messages=[{"role": "user", "content": q}], max_tokens=48,
                                   temperature=0)
    text = c.choices[0].message.content
    assert "Paris" in text, text
    streamed = "".join((ch.choices[0].delta.content or "") for ch in cl.chat.completions.create(
        model=chat_server.name, messages=[{"role": "user", "content": q}], max_tokens=48, temperature=0, stream=True)
        if ch.choices)
    assert streamed == text
    r = subprocess.run([KILN, "chat", "--model", _chat_model(), "-n", "48"], input=q.encode(), capture_output=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    assert r.stdout.decode().strip() == text.strip()


def test_cpu_step_budget_defaults(model_args):
    """kiln serve on the CPU backend turns the step budgets on by default (--max-itl-ms 50,
    --max-step-ms 500: issue 22, a long prompt must not stall the others); a flag or its variable
    overrides, 0 turns them off; the attention term of the cost model is exported."""
    def sched(extra=()):
        s = Server(model_args, extra)
        try:
            # one request so that the fit has seen a step
            r = requests.post(s.url + "/v1/completions", json={"model": s.name, "prompt": "Once upon a time",
                                                              "max_tokens": 4, "temperature": 0}, timeout=60)
            assert r.status_code == 200, r.text
            return metrics(s)
        finally:
            s.stop()
    m = sched()
    assert m["kiln:sched_max_itl_seconds"] == pytest.approx(0.05)
    assert m["kiln:sched_max_step_seconds"] == pytest.approx(0.5)
    assert "kiln:sched_step_limited_steps_total" in m and m["kiln:sched_step_cost_samples_total"] > 0
    m = sched(["--max-step-ms", "0", "--max-itl-ms", "20"])
    assert m["kiln:sched_max_step_seconds"] == 0 and m["kiln:sched_max_itl_seconds"] == pytest.approx(0.02)
    m = sched(["--max-step-ms", "250"])
    assert m["kiln:sched_max_step_seconds"] == pytest.approx(0.25) and m["kiln:sched_max_itl_seconds"] == pytest.approx(0.05)
