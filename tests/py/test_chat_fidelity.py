"""Rendering fidelity of the Mistral chat formats against mistral-common (issue 18), token for token.

The oracle is mistral-common's MistralTokenizer.encode_chat_completion (request validator in mode
"test", normaliser, instruct tokenizer) over the tekken file shipped in the package
(tekken_240911.json): as the file says (v3: MistralRequestValidatorV3, InstructRequestNormalizer,
InstructTokenizerV3) and as v7 (MistralRequestValidatorV5, InstructRequestNormalizerV7,
InstructTokenizerV7, what a v7 tekken file such as Devstral's picks). kiln renders the same
requests through `kiln tokenize --chat` (the server's OpenAI parser) and the server's /tokenize
with messages, and must give the same ids for
  1. an assistant message with prefix: true last (continued: no </s>),
  2. runs of user / assistant messages (merged with "\\n\\n"),
  3. content as a list of text parts (joined with "\\n\\n", empty parts skipped),
with and without tools; and
  4. must refuse what mistral-common's validator refuses, with a message naming the problem (the
     server: a 400 through the real openai client, and it keeps serving).
kiln reads no SentencePiece .model file, so the package's SentencePiece tokenizers are not
compared here. Skips loudly when the binary, a package or a file is missing."""
import json
import subprocess
from pathlib import Path

import pytest

mc = pytest.importorskip("mistral_common", reason="SKIP: mistral-common is not installed")
from mistral_common.protocol.instruct.normalize import InstructRequestNormalizerV7  # noqa: E402
from mistral_common.protocol.instruct.request import ChatCompletionRequest  # noqa: E402
from mistral_common.protocol.instruct.validator import MistralRequestValidatorV5, ValidationMode  # noqa: E402
from mistral_common.tokens.tokenizers.instruct import InstructTokenizerV3, InstructTokenizerV7  # noqa: E402
from mistral_common.tokens.tokenizers.mistral import MistralTokenizer  # noqa: E402
from mistral_common.tokens.tokenizers.tekken import Tekkenizer  # noqa: E402
from chat_cases import CALL, SEARCH, WEATHER  # noqa: E402

TEKKEN = Path(mc.__file__).parent / "data" / "tekken_240911.json"
FMTS = ["mistral-v3", "mistral-v7"]


def U(c):
    return {"role": "user", "content": c}


def A(c, **k):
    return {"role": "assistant", "content": c, **k}


def S(c):
    return {"role": "system", "content": c}


def T(content="sunny", i="abcDEF123", **k):
    return {"role": "tool", "tool_call_id": i, "content": content, **k}


def P(*texts):
    return [{"type": "text", "text": t} for t in texts]


CALL2 = [dict(CALL[0], id="xyzXYZ789")]

CASES = {
    # 1. prefix
    "prefix": {"messages": [U("Name a colour."), A("The colour is ", prefix=True)]},
    "prefix_system": {"messages": [S("Be brief."), U("2+2?"), A("4"), U("3+3?"), A("It is", prefix=True)]},
    "prefix_after_tool": {"messages": [U("Weather in Paris?"), A(None, tool_calls=CALL), T('{"temp": 21}'),
                                       A("It is 21 degrees ", prefix=True)], "tools": [WEATHER]},
    "prefix_tools": {"messages": [U("Weather?"), A("Let me", prefix=True)], "tools": [WEATHER, SEARCH]},
    # 2. runs merged
    "users_merged": {"messages": [S("Sys one."), S("Sys two."), U("First."), U("Second."), A("Ok."), U("Third.")]},
    "assistants_merged": {"messages": [U("Hi"), A("Hello."), A("How can I help?"), U("Joke?")]},
    "assistants_merged_prefix": {"messages": [U("Hi"), A("Hello."), A("And ", prefix=True)]},
    "merged_tools": {"messages": [U("Hi."), U("Weather in Paris?"), A(None, tool_calls=CALL), T("sunny"),
                                  U("And Rome?"), U("Tomorrow.")], "tools": [WEATHER]},
    "empty_user_in_run": {"messages": [U(""), U("Only this."), A("Yes."), U("")]},
    "system_breaks_run": {"messages": [U("a"), S("s"), U("b")]},
    # 3. text parts
    "parts_user": {"messages": [U(P("part one", "", "part two")), U("plain")]},
    "parts_everywhere": {"messages": [{"role": "system", "content": P("sys a", "sys b")}, U(P("u1", "u2")),
                                      A(P("a1", "a2")), U(P("", "last"))]},
    "parts_prefix": {"messages": [U(P("q1", "q2")), A(P("The ", "answer: "), prefix=True)]},
    "parts_tool": {"messages": [U(P("Weather?", "Paris")), A(None, tool_calls=CALL),
                                T(P('{"temp": ', '21}')), U(P("thanks"))], "tools": [WEATHER, SEARCH]},
    "parts_tool_json": {"messages": [U("Weather?"), A(None, tool_calls=CALL), T(P('{"temp": 21}'))],
                        "tools": [WEATHER]},
}

# 4. refused by mistral-common's validator (both versions) -> refused by kiln, the word in the message
REFUSED = {
    "system_after_assistant": ([U("a"), A("b"), S("c"), U("d")], "cannot follow"),
    "system_after_tool": ([U("a"), A(None, tool_calls=CALL), T(), S("c"), U("d")], "cannot follow"),
    "tool_after_user": ([U("a"), T()], "cannot follow"),
    "ends_with_assistant": ([U("a"), A("b")], "last message"),
    "prefix_not_last": ([U("a"), A("b", prefix=True), U("c")], "prefix"),
    "prefix_on_user": ([U("a"), U("b"), A("c", prefix=True), A("d")], "last message"),
    "single_assistant": ([A("b")], "one message"),
    "empty_assistant": ([U("a"), A(""), U("c")], "neither"),
    "bad_call_id": ([U("a"), A(None, tool_calls=[dict(CALL[0], id="short")]), T(i="short")], "id"),
    "bad_tool_call_id": ([U("a"), A(None, tool_calls=CALL), T(i="zzz")], "tool_call_id"),
    "missing_tool_result": ([U("a"), A(None, tool_calls=CALL + CALL2), T(), A("x"), U("b")], "tool calls"),
    "extra_tool_result": ([U("a"), A(None, tool_calls=CALL), T(), T(i="xyzXYZ789"), A("x"), U("b")], "tool calls"),
    "bad_function_name": ([U("a"), A(None, tool_calls=[{"id": "abcDEF123", "type": "function", "function":
                                                        {"name": "get weather", "arguments": "{}"}}]), T()], "name"),
    "bad_tool_name": ([U("a"), A(None, tool_calls=CALL), T(name="bad name!")], "name"),
}
REFUSED_TOOLS = {"bad_tool_def_name": ([U("a")], [{"type": "function", "function": {
    "name": "has space", "description": "", "parameters": {"type": "object", "properties": {}}}}], "name")}
REFUSED_V3 = {"content_and_calls": ([U("a"), A("x", tool_calls=CALL), T()], "tool calls"),
              "merged_content_and_calls": ([U("a"), A("x"), A(None, tool_calls=CALL), T()], "tool calls")}


@pytest.fixture(scope="module")
def oracles():
    if not TEKKEN.exists():
        pytest.skip(f"SKIP: {TEKKEN} not in the mistral-common package")
    v3 = MistralTokenizer.from_file(str(TEKKEN))
    assert isinstance(v3.instruct_tokenizer, InstructTokenizerV3)
    assert not isinstance(v3.instruct_tokenizer, InstructTokenizerV7)
    v7 = MistralTokenizer(InstructTokenizerV7(Tekkenizer.from_file(str(TEKKEN))),
                          MistralRequestValidatorV5(ValidationMode.test), InstructRequestNormalizerV7.normalizer())
    return {"mistral-v3": v3, "mistral-v7": v7}


def oracle(oracles, fmt, req):
    return oracles[fmt].encode_chat_completion(ChatCompletionRequest(**req)).tokens


def kiln_chat(kiln, req, tmp_path, fmt):
    p = tmp_path / "req.json"
    p.write_text(json.dumps(req))
    return subprocess.run([kiln, "tokenize", "--tokenizer", str(TEKKEN), "--chat", str(p), "--chat-template", fmt],
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("fmt", FMTS)
@pytest.mark.parametrize("name", list(CASES))
def test_cli_matches_mistral_common(kiln, oracles, tmp_path, name, fmt):
    want = oracle(oracles, fmt, CASES[name])
    r = kiln_chat(kiln, CASES[name], tmp_path, fmt)
    assert r.returncode == 0, r.stderr
    assert [int(x) for x in r.stdout.split()] == want


def test_prefix_has_no_end_of_turn(kiln, oracles, tmp_path):
    for fmt in FMTS:
        r = kiln_chat(kiln, CASES["prefix"], tmp_path, fmt)
        ids = [int(x) for x in r.stdout.split()]
        eos = oracles[fmt].instruct_tokenizer.tokenizer.eos_id
        assert r.returncode == 0 and eos not in ids, r.stderr
        text = oracles[fmt].instruct_tokenizer.tokenizer.decode(ids, special_token_policy="keep")
        assert text.endswith("[/INST]The colour is"), text  # rstrip(" "), as mistral-common


def refused_cases(fmt):
    out = [(n, {"messages": m}, w) for n, (m, w) in REFUSED.items()]
    out += [(n, {"messages": m, "tools": t}, w) for n, (m, t, w) in REFUSED_TOOLS.items()]
    if fmt == "mistral-v3":
        out += [(n, {"messages": m}, w) for n, (m, w) in REFUSED_V3.items()]
    return out


@pytest.mark.parametrize("fmt", FMTS)
def test_refused_by_both(kiln, oracles, tmp_path, fmt):
    for name, req, word in refused_cases(fmt):
        with pytest.raises(Exception):
            oracle(oracles, fmt, req)
            pytest.fail(f"{name}: mistral-common accepted it")
        r = kiln_chat(kiln, req, tmp_path, fmt)
        assert r.returncode != 0, f"{name}: kiln accepted it: {r.stdout}"
        assert "chat:" in r.stderr and word in r.stderr, f"{name}: {r.stderr}"


def test_v7_accepts_content_and_calls(kiln, oracles, tmp_path):
    """v7 (validator V5) takes content and tool calls in one assistant message; v3 does not."""
    req = {"messages": [U("a"), A("Checking.", tool_calls=CALL), T()], "tools": [WEATHER]}
    r = kiln_chat(kiln, req, tmp_path, "mistral-v7")
    assert r.returncode == 0, r.stderr
    assert [int(x) for x in r.stdout.split()] == oracle(oracles, "mistral-v7", req)


def test_prefix_refused_outside_mistral_formats(kiln, default_gguf, tmp_path):
    p = tmp_path / "req.json"
    p.write_text(json.dumps(CASES["prefix"]))
    r = subprocess.run([kiln, "tokenize", "--tokenizer", default_gguf, "--chat", str(p)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "prefix" in r.stderr and "mistral" in r.stderr, r.stderr


# ---- the server: /tokenize with messages gives the oracle's ids; a refused conversation is a 400 ----
@pytest.fixture(scope="module", params=FMTS)
def mistral_server(request):
    """SmolLM2 (vocabulary 49152) served with the tekken tokenizer: the chat ids of these short
    English requests stay below 49152, so generation runs (the text is noise; only ids matter)."""
    from serve_util import Srv, default_gguf
    g = default_gguf()
    if not g or not TEKKEN.exists():
        pytest.skip("SKIP: no default GGUF or no tekken file")
    s = Srv(["--model", g, "--tokenizer", str(TEKKEN)], extra=["--chat-template", request.param])
    yield request.param, s
    s.stop()


@pytest.mark.parametrize("name", ["prefix", "prefix_after_tool", "users_merged", "merged_tools", "parts_everywhere",
                                  "parts_tool"])
def test_server_tokenize_matches_mistral_common(mistral_server, oracles, name):
    fmt, s = mistral_server
    st, _, body = s.request("POST", "/tokenize", body=json.dumps(CASES[name]),
                            headers={"Content-Type": "application/json"})
    assert st == 200, body
    assert json.loads(body)["tokens"] == oracle(oracles, fmt, CASES[name])


def test_server_refuses_with_400_and_keeps_serving(mistral_server):
    openai = pytest.importorskip("openai", reason="SKIP: openai is not installed")
    fmt, s = mistral_server
    client = openai.OpenAI(base_url=s.url + "/v1", api_key="none", max_retries=0, timeout=120)
    for msgs in ([U("a"), A("b"), S("c"), U("d")], [U("a"), A("b")],
                 [U("a"), A("b", prefix=True), U("c")]):
        with pytest.raises(openai.BadRequestError) as ei:
            client.chat.completions.create(model="kiln-test-model", messages=msgs, max_tokens=2)
        assert ei.value.status_code == 400
        msg = ei.value.body["message"] if isinstance(ei.value.body, dict) else str(ei.value)
        assert "chat:" in msg and ("cannot follow" in msg or "last message" in msg or "prefix" in msg), msg
    r = client.chat.completions.create(model="kiln-test-model", messages=[U("Hello"), A("Hi", prefix=True)],
                                       max_tokens=2, temperature=0)
    assert r.choices[0].finish_reason in ("length", "stop")
    r = client.chat.completions.create(model="kiln-test-model", messages=[U("Hello")], max_tokens=2)
    assert r.choices[0].message is not None
