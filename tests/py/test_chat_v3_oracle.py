"""mistral-v3 chat format against mistral-common (nobody here wrote it).

The oracle is MistralTokenizer.from_file(tekken v3 json shipped in the mistral-common package):
it picks InstructRequestNormalizer + InstructTokenizerV3 from the file's config.version (checked
below), and `kiln tokenize --chat` must give the same ids token for token -- with no
--chat-template (kiln selects mistral-v3 from config.version) and with an explicit
--chat-template mistral-v3. Cases: single turn, system prompt(s) merged into the last user
message, multi-turn with merged consecutive messages, unicode, control-looking text typed by the
user, tools, tool call + tool result round trips (JSON and plain-text results, several calls).
Assistant turns with v3 tool calls (ids included) are parsed back by `kiln tokenize --tool-calls`.
Skips loudly when the binary, the package or its tekken files are missing."""
import json
import re
import subprocess
from pathlib import Path

import pytest

mc = pytest.importorskip("mistral_common", reason="SKIP: mistral-common is not installed")
from mistral_common.protocol.instruct.request import ChatCompletionRequest  # noqa: E402
from mistral_common.tokens.tokenizers.instruct import InstructTokenizerV3, InstructTokenizerV7  # noqa: E402
from mistral_common.tokens.tokenizers.mistral import MistralTokenizer  # noqa: E402
from chat_cases import CALL, SEARCH, WEATHER  # noqa: E402

DATA = Path(mc.__file__).parent / "data"
TEKKENS = ["tekken_240718.json", "tekken_240911.json"]

TWO_CALLS = [{"id": "call00001", "type": "function",
              "function": {"name": "search", "arguments": "{\"q\": \"kiln \\\"C\\\" 東京\", \"n\": 3}"}},
             {"id": "call00002", "type": "function", "function": {"name": "get_weather", "arguments": ""}}]

CASES = {
    "single": {"messages": [{"role": "user", "content": "Hello"}]},
    "system": {"messages": [{"role": "system", "content": "You are a pirate.\nSpeak like one."},
                            {"role": "user", "content": "Who are you?"}]},
    "multi_turn": {"messages": [{"role": "system", "content": "Be brief."},
                                {"role": "user", "content": "2+2?"},
                                {"role": "assistant", "content": "4  "},
                                {"role": "user", "content": "And 3+3?"},
                                {"role": "assistant", "content": "6"},
                                {"role": "assistant", "content": "or six "},
                                {"role": "user", "content": "Thanks"},
                                {"role": "system", "content": "Second system text."},
                                {"role": "user", "content": "Really."},
                                {"role": "user", "content": "Bye."}]},
    "unicode": {"messages": [{"role": "system", "content": "Réponds en français 🙂"},
                             {"role": "user", "content": "ünïcödé 日本語 🙂 — Ελληνικά \t tabs\nnew line"},
                             {"role": "assistant", "content": "Très bien: 東京 ✓"},
                             {"role": "user", "content": "Merci « beaucoup » !"}]},
    "control_text": {"messages": [{"role": "user", "content":
                                   "[INST] </s> <s> [TOOL_CALLS] [AVAILABLE_TOOLS] [/INST] <|im_end|>"}]},
    "assistant_first": {"messages": [{"role": "assistant", "content": "Hi, how can I help?"},
                                     {"role": "user", "content": "Tell me a joke."}]},
    "system_only": {"messages": [{"role": "system", "content": "Just a system prompt."}]},
    "tools": {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
                           {"role": "user", "content": "Weather in Paris?"}], "tools": [WEATHER, SEARCH]},
    "tool_round_trip": {"messages": [{"role": "system", "content": "Use tools."},
                                     {"role": "user", "content": "Weather in Paris?"},
                                     {"role": "assistant", "content": None, "tool_calls": CALL},
                                     {"role": "tool", "tool_call_id": "abcDEF123", "name": "get_weather",
                                      "content": "{\"temp\": 21.5, \"sky\": \"clear\"}"},
                                     {"role": "assistant", "content": "It is 21.5 C and clear."},
                                     {"role": "user", "content": "And tomorrow?"}],
                        "tools": [WEATHER]},
    "tool_result_last": {"messages": [{"role": "user", "content": "Weather?"},
                                      {"role": "assistant", "content": None, "tool_calls": CALL},
                                      {"role": "tool", "tool_call_id": "abcDEF123", "content": "sunny"}],
                         "tools": [WEATHER]},
    "numbers_in_results": {"messages": [
        {"role": "user", "content": "Numbers?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "num000001", "type": "function",
             "function": {"name": "search", "arguments": "{\"q\": 1e5, \"n\": 0.1, \"m\": -0.0}"}}]},
        {"role": "tool", "tool_call_id": "num000001", "content":
         "{\"a\": 1e5, \"b\": 1.5e-7, \"c\": 12345678901234567890.0, \"d\": 0.0001, \"e\": 1e16,"
         " \"f\": 123456789012345.6, \"g\": 2.5, \"h\": 1e15, \"i\": [true, null, -3, \"\\u00e9\\n\"]}"}],
        "tools": [SEARCH]},
    "two_calls": {"messages": [{"role": "system", "content": "Be helpful."},
                               {"role": "user", "content": "Search, then weather."},
                               {"role": "assistant", "content": "", "tool_calls": TWO_CALLS},
                               {"role": "tool", "tool_call_id": "call00001", "content": "[1, 2, \"three\"]"},
                               {"role": "tool", "tool_call_id": "call00002", "content": ""}],
                  "tools": [WEATHER, SEARCH]},
}


@pytest.fixture(scope="module", params=TEKKENS)
def tekken(request):
    path = DATA / request.param
    if not path.exists():
        pytest.skip(f"SKIP: {path} not in the mistral-common package")
    mt = MistralTokenizer.from_file(str(path))
    # the oracle really is v3 (and not v7, which subclasses v3)
    assert isinstance(mt.instruct_tokenizer, InstructTokenizerV3)
    assert not isinstance(mt.instruct_tokenizer, InstructTokenizerV7)
    return path, mt


def kiln_chat(kiln, tok, req, tmp_path, *args):
    p = tmp_path / "req.json"
    p.write_text(json.dumps(req))
    return subprocess.run([kiln, "tokenize", "--tokenizer", str(tok), "--chat", str(p), *args],
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("how", ["auto", "named"])
@pytest.mark.parametrize("name", list(CASES))
def test_mistral_v3_matches_mistral_common(kiln, tekken, tmp_path, name, how):
    path, mt = tekken
    want = mt.encode_chat_completion(ChatCompletionRequest(**CASES[name])).tokens
    args = () if how == "auto" else ("--chat-template", "mistral-v3")
    r = kiln_chat(kiln, path, CASES[name], tmp_path, *args)
    assert r.returncode == 0, r.stderr
    assert [int(x) for x in r.stdout.split()] == want


def test_control_text_stays_text(kiln, tekken, tmp_path):
    path, mt = tekken
    r = kiln_chat(kiln, path, CASES["control_text"], tmp_path)
    assert r.returncode == 0, r.stderr
    ids = [int(x) for x in r.stdout.split()]
    tk = mt.instruct_tokenizer.tokenizer
    inst, end_inst = tk.get_special_token("[INST]"), tk.get_special_token("[/INST]")
    assert ids[0] == tk.bos_id and ids.count(tk.bos_id) == 1 and tk.eos_id not in ids
    assert ids.count(inst) == 1 and ids.count(end_inst) == 1
    assert tk.get_special_token("[TOOL_CALLS]") not in ids and tk.get_special_token("[AVAILABLE_TOOLS]") not in ids


def test_template_override_on_v3_file(kiln, tekken, tmp_path):
    """--chat-template mistral-v7 still wins over the file's v3 (system prompt as [SYSTEM_PROMPT])."""
    path, mt = tekken
    r3 = kiln_chat(kiln, path, CASES["system"], tmp_path)
    r7 = kiln_chat(kiln, path, CASES["system"], tmp_path, "--chat-template", "mistral-v7")
    assert r3.returncode == 0 and r7.returncode == 0, r3.stderr + r7.stderr
    sp = mt.instruct_tokenizer.tokenizer.get_special_token("[SYSTEM_PROMPT]")
    assert sp in [int(x) for x in r7.stdout.split()] and sp not in [int(x) for x in r3.stdout.split()]


def test_content_and_tool_calls_is_an_error(kiln, tekken, tmp_path):
    path, _ = tekken
    req = {"messages": [{"role": "user", "content": "x"},
                        {"role": "assistant", "content": "Let me check.", "tool_calls": CALL},
                        {"role": "tool", "tool_call_id": "abcDEF123", "content": "sunny"}]}
    r = kiln_chat(kiln, path, req, tmp_path)
    assert r.returncode != 0 and "tool calls" in r.stderr


@pytest.mark.parametrize("calls", [
    [{"id": "abcDEF123", "name": "get_weather", "arguments": {"city": "Paris", "unit": "c"}}],
    [{"id": "Zz9Yy8Xx7", "name": "search", "arguments": {"q": "kiln \"C\" engine", "n": 3}},
     {"id": "A1b2C3d4E", "name": "get_weather", "arguments": {"city": "東京"}}],
])
def test_parse_v3_tool_calls(kiln, tekken, calls):
    from mistral_common.protocol.instruct.messages import AssistantMessage
    from mistral_common.protocol.instruct.tool_calls import FunctionCall, ToolCall
    path, mt = tekken
    msg = AssistantMessage(tool_calls=[ToolCall(id=c["id"], function=FunctionCall(name=c["name"],
                                                                                   arguments=c["arguments"]))
                                       for c in calls])
    ids = mt.instruct_tokenizer.encode_assistant_message(msg, False)
    assert ids[-1] == mt.instruct_tokenizer.tokenizer.eos_id
    r = subprocess.run([kiln, "tokenize", "--tokenizer", str(path), "--tool-calls"],
                       input=" ".join(map(str, ids[:-1])), capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["content"] == ""
    tc = out["tool_calls"]
    assert [t["id"] for t in tc] == [c["id"] for c in calls]
    assert [t["function"]["name"] for t in tc] == [c["name"] for c in calls]
    assert [json.loads(t["function"]["arguments"]) for t in tc] == [c["arguments"] for c in calls]
    for t in tc:
        assert t["type"] == "function" and re.fullmatch(r"[A-Za-z0-9]{9}", t["id"])
