"""test_server_mistral_tools.py: Mistral v11 / v13 tool calls through `kiln serve`, with the official
`openai` client (issue 18).

No v11/v13 model is at hand: the default model (SmolLM2-135M-Instruct, GGUF) is served with a
fixture tekken file of that version (mistral_tekken.py, made at test time from mistral-common's
own file): prompts are rendered in the Mistral format of the file's version, the model's answer
ids (below SmolLM2's 49,152) are read as tekken text by the server's Mistral reader
(src/server/mistral_tools.c). Checked:
  - the prompt /tokenize renders for a tool conversation is mistral-common's, token for token;
  - tool_choice "required" and a named function: every answer is a call of an allowed function
    whose arguments validate against its schema, finish_reason "tool_calls", ids of 9
    alphanumerics (what the Mistral formats take back), and the calls rendered back into the next
    request are accepted;
  - streamed: the tool_calls deltas (name and id first, arguments in several pieces)
    concatenated equal the whole answer, and the client's streaming helper accumulates the same;
  - a plain answer has no reasoning_content (the model wrote no [THINK]);
  - what the v11 / v13 validator refuses (role order, a result for no pending call id) is a 400.
Skips loudly without the default model or mistral-common.
"""
import json
import re

import pytest

openai = pytest.importorskip("openai")
jsonschema = pytest.importorskip("jsonschema")
pytest.importorskip("mistral_common", reason="SKIP: mistral-common is not installed")
from mistral_common.protocol.instruct.request import ChatCompletionRequest  # noqa: E402
from mistral_common.tokens.tokenizers.mistral import MistralTokenizer  # noqa: E402
from mistral_tekken import make_tekken, package_tekken  # noqa: E402
from serve_util import NAME, Srv, default_gguf  # noqa: E402

TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "Current weather in a city",
                                      "parameters": {"type": "object", "properties": {
                                          "city": {"type": "string", "maxLength": 8},
                                          "unit": {"type": "string", "enum": ["C", "F"]}},
                                          "required": ["city"]}}},
    {"type": "function", "function": {"name": "search", "description": "Search the web",
                                      "parameters": {"type": "object", "properties": {"q": {"type": "string", "maxLength": 8}},
                                                     "required": ["q"]}}},
]
MSGS = [{"role": "user", "content": "What is the weather in Paris? Also search for news."}]


@pytest.fixture(scope="module", params=["v11", "v13"])
def served(request, tmp_path_factory):
    g = default_gguf()
    if not g or package_tekken() is None:
        pytest.skip("SKIP: no default model (SmolLM2 GGUF) or no tekken file in mistral-common")
    tok = make_tekken(request.param, tmp_path_factory.mktemp("tekken"))
    s = Srv(["--model", g, "--tokenizer", str(tok)], extra=["--max-num-seqs", "4"])
    yield request.param, tok, s
    s.stop()


@pytest.fixture(scope="module")
def client(served):
    return openai.OpenAI(base_url=served[2].url + "/v1", api_key="x", max_retries=0, timeout=120)


def _call(client, stream=False, **kw):
    args = dict(model=NAME, messages=MSGS, tools=TOOLS, temperature=1.0, max_tokens=200)
    args.update(kw)
    return client.chat.completions.create(stream=stream, **args)


def check_calls(calls, allowed):
    assert calls, "no tool call"
    schemas = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
    for c in calls:
        assert c.type == "function" and re.fullmatch(r"[A-Za-z0-9]{9}", c.id), c.id
        assert c.function.name in allowed, c.function.name
        jsonschema.validate(json.loads(c.function.arguments), schemas[c.function.name])


def test_prompt_is_mistral_commons(served):
    v, tok, s = served
    req = {"messages": MSGS + [
        {"role": "assistant", "content": None, "tool_calls": [{"id": "abcDEF123", "type": "function", "function": {
            "name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
        {"role": "tool", "tool_call_id": "abcDEF123", "content": "sunny"}], "tools": TOOLS}
    st, _, body = s.request("POST", "/tokenize", body=json.dumps(req), headers={"Content-Type": "application/json"})
    assert st == 200, body
    want = MistralTokenizer.from_file(str(tok)).encode_chat_completion(ChatCompletionRequest(**req)).tokens
    assert json.loads(body)["tokens"] == want


@pytest.mark.parametrize("choice,allowed,parallel", [
    ("required", {"get_weather", "search"}, True),
    ({"type": "function", "function": {"name": "search"}}, {"search"}, True),
    ({"type": "function", "function": {"name": "get_weather"}}, {"get_weather"}, False)])
def test_forced_calls(served, client, choice, allowed, parallel):
    for seed in (1, 2):
        r = _call(client, tool_choice=choice, seed=seed, parallel_tool_calls=parallel)
        ch = r.choices[0]
        assert ch.finish_reason == "tool_calls", (ch.finish_reason, ch.message)
        check_calls(ch.message.tool_calls, allowed)
        assert not ch.message.content
        if not parallel:
            assert len(ch.message.tool_calls) == 1
    # the answer goes back into the conversation: rendered and accepted (ids, names, arguments)
    nxt = MSGS + [ch.message.model_dump(exclude_none=True)] + [
        {"role": "tool", "tool_call_id": c.id, "content": "ok"} for c in ch.message.tool_calls]
    st, _, body = served[2].request("POST", "/tokenize", body=json.dumps({"messages": nxt, "tools": TOOLS}),
                                    headers={"Content-Type": "application/json"})
    assert st == 200, body


def test_streamed_calls_equal_whole(client):
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
    with client.chat.completions.stream(model=NAME, messages=MSGS, tools=TOOLS, temperature=1.0, max_tokens=200,
                                        tool_choice="required", seed=7) as st:
        for _ in st:
            pass
        final = st.get_final_completion()
    assert [(c.function.name, c.function.arguments) for c in final.choices[0].message.tool_calls] == got


def test_plain_answer_streams_as_whole(client):
    msgs = [{"role": "user", "content": "What is the weather in Paris?"}]
    r = client.chat.completions.create(model=NAME, messages=msgs, temperature=0, max_tokens=16)
    chunks = [c for c in client.chat.completions.create(model=NAME, messages=msgs, temperature=0, max_tokens=16,
                                                        stream=True) if c.choices]
    text = "".join((c.choices[0].delta.content or "") for c in chunks)
    m = r.choices[0].message
    if m.tool_calls is None:
        assert text == (m.content or "")
        reasoning = getattr(m, "reasoning_content", None) or (m.model_extra or {}).get("reasoning_content")
        assert ("[THINK]" in (m.content or "")) or reasoning is None


def test_refused_with_400_naming_the_rule(client):
    """what mistral-common's v11 / v13 validator refuses is a 400 naming it, and the server goes on"""
    call = {"id": "abcDEF123", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
    bad = {"cannot follow": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                             {"role": "system", "content": "c"}, {"role": "user", "content": "d"}],
           "tool call id": MSGS + [{"role": "assistant", "content": None, "tool_calls": [call]},
                                   {"role": "tool", "tool_call_id": "zzzZZZ999", "content": "x"}]}
    for word, msgs in bad.items():
        with pytest.raises(openai.BadRequestError) as ei:
            client.chat.completions.create(model=NAME, messages=msgs, tools=TOOLS, max_tokens=2)
        msg = ei.value.body["message"] if isinstance(ei.value.body, dict) else str(ei.value)
        assert ei.value.status_code == 400 and "chat:" in msg and word in msg, msg
    r = client.chat.completions.create(model=NAME, messages=MSGS, max_tokens=2)
    assert r.choices[0].finish_reason in ("stop", "length", "tool_calls")
