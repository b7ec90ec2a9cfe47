"""test_server_llama3_tools.py: Llama 3 JSON tool calls through `kiln serve`, with the official
`openai` client.

No Llama 3 model is at hand, so the default model (SmolLM2-135M-Instruct, GGUF) is served with a
Llama-3-style tokenizer made from its own vocabulary: the GGUF's tokens and merges written as a
tokenizer.json whose first special tokens are renamed to Llama 3's (<|im_end|>, the model's end
of turn, becomes <|eot_id|>), and a tokenizer_config.json carrying Meta's Llama 3.2 template
(tests/fixtures/). kiln then renders prompts in its llama3 format and reads the output as vLLM's
llama3_json parser does (src/server/llama3_tools.c). Checked:
  - tool_choice "required" and a named function: every answer is a call of an allowed function
    whose arguments validate against its schema, finish_reason "tool_calls";
  - streamed: the tool_calls deltas (name first, arguments in several pieces) concatenated equal
    the whole answer; the client's streaming helper accumulates the same;
  - tool_choice auto with an answer that is no call: streamed content equals the whole content.
Skips loudly without the default model or the fixture.
"""
import json
import struct

import pytest

openai = pytest.importorskip("openai")
jsonschema = pytest.importorskip("jsonschema")

from serve_util import NAME, ROOT, Srv, chat_template, default_gguf

TEMPLATE = chat_template("meta-llama-Llama-3.2-3B-Instruct.jinja")
LLAMA3_NAMES = {0: "<|end_of_text|>", 1: "<|begin_of_text|>", 2: "<|eot_id|>", 3: "<|start_header_id|>",
                4: "<|end_header_id|>", 5: "<|python_tag|>", 6: "<|eom_id|>"}
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "Current weather in a city",
                                      "parameters": {"type": "object", "properties": {
                                          "city": {"type": "string", "maxLength": 20},
                                          "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
                                          "required": ["city"]}}},
    {"type": "function", "function": {"name": "search", "description": "Search the web",
                                      "parameters": {"type": "object", "properties": {"q": {"type": "string", "maxLength": 30}},
                                                     "required": ["q"]}}},
]
PROMPT = "What is the weather in Paris? Also search for news."


def gguf_vocab(path):
    """tokenizer.ggml.tokens and .merges of a GGUF (v2/v3 header and metadata only)"""
    with open(path, "rb") as f:
        data = f.read(8 << 20)  # the metadata is at the front
    magic, ver, _n_t, n_kv = struct.unpack_from("<4sIQQ", data, 0)
    assert magic == b"GGUF" and ver >= 2, (magic, ver)
    pos = 24
    sizes = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}

    def string():
        nonlocal pos
        (n,) = struct.unpack_from("<Q", data, pos)
        s = data[pos + 8:pos + 8 + n].decode("utf-8")
        pos += 8 + n
        return s

    def value(t):
        nonlocal pos
        if t == 8:
            return string()
        if t == 9:
            it, n = struct.unpack_from("<IQ", data, pos)
            pos += 12
            return [value(it) for _ in range(n)]
        pos += sizes[t]
        return None

    out = {}
    for _ in range(n_kv):
        k = string()
        (t,) = struct.unpack_from("<I", data, pos)
        pos += 4
        v = value(t)
        if k in ("tokenizer.ggml.tokens", "tokenizer.ggml.merges"):
            out[k] = v
    return out["tokenizer.ggml.tokens"], out["tokenizer.ggml.merges"]


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    g = default_gguf()
    if not g:
        pytest.skip("SKIP: no default model (SmolLM2 GGUF): run scripts/get_default_model.sh")
    if TEMPLATE is None:
        pytest.skip("SKIP: the Llama 3.2 template is not cached: run scripts/get_chat_templates.sh")
    toks, merges = gguf_vocab(g)
    for i, n in LLAMA3_NAMES.items():
        toks[i] = n
    d = tmp_path_factory.mktemp("llama3tok")
    added = [{"id": i, "content": toks[i], "single_word": False, "lstrip": False, "rstrip": False, "normalized": False,
              "special": True} for i in range(17)]  # SmolLM2's specials are ids 0..16
    (d / "tokenizer.json").write_text(json.dumps({
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added, "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": {t: i for i, t in enumerate(toks)}, "merges": merges}}))
    (d / "tokenizer_config.json").write_text(json.dumps({
        "bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>", "chat_template": TEMPLATE,
        "tokenizer_class": "PreTrainedTokenizerFast"}))
    s = Srv(["--model", g, "--tokenizer", str(d)], extra=["--max-num-seqs", "4"])
    yield s
    s.stop()


@pytest.fixture(scope="module")
def client(srv):
    return openai.OpenAI(base_url=srv.url + "/v1", api_key="x", max_retries=0, timeout=120)


def _call(client, stream=False, **kw):
    args = dict(model=NAME, messages=[{"role": "user", "content": PROMPT}], tools=TOOLS, temperature=1.0, max_tokens=80)
    args.update(kw)
    return client.chat.completions.create(stream=stream, **args)


def check_calls(calls, allowed):
    assert calls, "no tool call"
    schemas = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
    for c in calls:
        assert c.type == "function" and c.id
        assert c.function.name in allowed, c.function.name
        jsonschema.validate(json.loads(c.function.arguments), schemas[c.function.name])


@pytest.mark.parametrize("choice,allowed,parallel", [
    ("required", {"get_weather", "search"}, True),
    ({"type": "function", "function": {"name": "search"}}, {"search"}, True),
    ({"type": "function", "function": {"name": "get_weather"}}, {"get_weather"}, False)])
def test_forced_llama3_calls(client, choice, allowed, parallel):
    for seed in (1, 2):
        r = _call(client, tool_choice=choice, seed=seed, parallel_tool_calls=parallel)
        ch = r.choices[0]
        assert ch.finish_reason == "tool_calls", (ch.finish_reason, ch.message)
        check_calls(ch.message.tool_calls, allowed)
        assert not ch.message.content
        if not parallel:
            assert len(ch.message.tool_calls) == 1


def test_streamed_llama3_calls_equal_whole(client):
    kw = {"tool_choice": "required", "seed": 7}
    whole = _call(client, **kw).choices[0].message.tool_calls
    check_calls(whole, {"get_weather", "search"})
    acc, n_arg_chunks, finish = {}, 0, None
    for chunk in _call(client, stream=True, **kw):
        if not chunk.choices:
            continue
        d = chunk.choices[0].delta
        finish = chunk.choices[0].finish_reason or finish
        assert not d.content
        for tc in d.tool_calls or []:
            e = acc.setdefault(tc.index, {"id": None, "name": None, "args": ""})
            if tc.id:
                assert e["id"] is None and e["args"] == ""  # the name (and id) first, then arguments
                e["id"] = tc.id
            if tc.function and tc.function.name:
                e["name"] = tc.function.name
            if tc.function and tc.function.arguments:
                e["args"] += tc.function.arguments
                n_arg_chunks += 1
    assert finish == "tool_calls"
    got = [(acc[i]["name"], acc[i]["args"]) for i in sorted(acc)]
    assert got == [(c.function.name, c.function.arguments) for c in whole]
    assert n_arg_chunks > len(whole), "arguments arrived in one piece per call, not streamed"
    with client.chat.completions.stream(model=NAME, messages=[{"role": "user", "content": PROMPT}], tools=TOOLS,
                                        temperature=1.0, max_tokens=80, tool_choice="required", seed=7) as st:
        for _ in st:
            pass
        final = st.get_final_completion()
    assert [(c.function.name, c.function.arguments) for c in final.choices[0].message.tool_calls] == got


def test_auto_llama3_content_streams(client):
    msgs = [{"role": "user", "content": "Say hi."}]
    r = client.chat.completions.create(model=NAME, messages=msgs, tools=TOOLS, temperature=0, max_tokens=16)
    text = "".join((c.choices[0].delta.content or "") for c in
                   client.chat.completions.create(model=NAME, messages=msgs, tools=TOOLS, temperature=0, max_tokens=16,
                                                  stream=True) if c.choices)
    if r.choices[0].message.tool_calls is None:
        assert text == (r.choices[0].message.content or "")
        assert r.choices[0].finish_reason in ("stop", "length")
