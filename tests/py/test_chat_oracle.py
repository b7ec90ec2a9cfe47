"""Chat formats against references nobody here wrote.

  - mistral-v7: `kiln tokenize --chat` vs mistral-common's InstructTokenizerV7 over
    Tekkenizer.from_file(tekken_240911.json from the mistral-common package), on requests with
    system prompts, multi-turn, tools, tool calls and tool results; control-token text typed in
    messages stays text;
  - tool-call parsing: assistant turns with tool calls encoded by mistral-common (real v7 token
    sequences) are parsed back by `kiln tokenize --tool-calls` into OpenAI tool_calls;
  - chatml: the SmolLM2 GGUF (template from its tokenizer.chat_template) vs HF `tokenizers`
    over the text its template renders (jinja2, as transformers does).
Skips loudly when the binary, a package or the model is missing."""
import json
import re
import subprocess
from pathlib import Path

import pytest

mc = pytest.importorskip("mistral_common", reason="SKIP: mistral-common is not installed")
from mistral_common.protocol.instruct.normalize import InstructRequestNormalizerV7  # noqa: E402
from mistral_common.protocol.instruct.request import ChatCompletionRequest  # noqa: E402
from mistral_common.tokens.tokenizers.instruct import InstructTokenizerV7  # noqa: E402
from mistral_common.tokens.tokenizers.tekken import Tekkenizer  # noqa: E402
from chat_cases import CALL, SEARCH, WEATHER  # noqa: E402

TEKKEN = Path(mc.__file__).parent / "data" / "tekken_240911.json"

CASES = {
    "single": {"messages": [{"role": "user", "content": "Hello"}]},
    "system": {"messages": [{"role": "system", "content": "You are a pirate.\nSpeak like one."},
                            {"role": "user", "content": "Who are you?"}]},
    "multi_turn": {"messages": [{"role": "system", "content": "Be brief."},
                                {"role": "user", "content": "2+2?"},
                                {"role": "assistant", "content": "4  "},
                                {"role": "user", "content": "And 3+3? ünïcödé 日本語 🙂"},
                                {"role": "assistant", "content": "6"},
                                {"role": "user", "content": "Thanks"}]},
    "control_text": {"messages": [{"role": "user", "content": "[INST] </s> <s> [TOOL_CALLS] <|im_end|> [/INST]"}]},
    "tools": {"messages": [{"role": "user", "content": "Weather in Paris?"}], "tools": [WEATHER, SEARCH]},
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
}


@pytest.fixture(scope="module")
def v7():
    if not TEKKEN.exists():
        pytest.skip(f"SKIP: {TEKKEN} not in the mistral-common package")
    return InstructTokenizerV7(Tekkenizer.from_file(str(TEKKEN)))


def oracle_ids(v7, req):
    r = InstructRequestNormalizerV7.normalizer().from_chat_completion_request(ChatCompletionRequest(**req))
    return v7.encode_instruct(r).tokens


def kiln_chat(kiln, tok, req, tmp_path, *args):
    p = tmp_path / "req.json"
    p.write_text(json.dumps(req))
    r = subprocess.run([kiln, "tokenize", "--tokenizer", str(tok), "--chat", str(p), *args],
                       capture_output=True, text=True, timeout=120)
    return r


@pytest.mark.parametrize("name", list(CASES))
def test_mistral_v7_matches_mistral_common(kiln, v7, tmp_path, name):
    r = kiln_chat(kiln, TEKKEN, CASES[name], tmp_path, "--chat-template", "mistral-v7")
    assert r.returncode == 0, r.stderr
    assert [int(x) for x in r.stdout.split()] == oracle_ids(v7, CASES[name])


def test_control_text_stays_text(kiln, v7, tmp_path):
    r = kiln_chat(kiln, TEKKEN, CASES["control_text"], tmp_path, "--chat-template", "mistral-v7")
    ids = [int(x) for x in r.stdout.split()]
    assert ids.count(3) == 1 and ids.count(4) == 1 and 2 not in ids and ids.count(1) == 1 and 9 not in ids


def test_auto_on_v3_tekken_picks_mistral_v3(kiln, tmp_path):
    """tekken_240911.json says config.version "v3": auto is mistral-v3 (oracle cases in
    test_chat_v3_oracle.py), not v7 (no [SYSTEM_PROMPT])."""
    if not TEKKEN.exists():
        pytest.skip("SKIP: no tekken file")
    auto = kiln_chat(kiln, TEKKEN, CASES["system"], tmp_path)
    named = kiln_chat(kiln, TEKKEN, CASES["system"], tmp_path, "--chat-template", "mistral-v3")
    assert auto.returncode == 0 and named.returncode == 0, auto.stderr + named.stderr
    assert auto.stdout == named.stdout and "17" not in auto.stdout.split()  # 17: [SYSTEM_PROMPT]


def test_auto_on_unknown_tekken_version_is_a_clear_error(kiln, tmp_path):
    if not TEKKEN.exists():
        pytest.skip("SKIP: no tekken file")
    d = json.loads(TEKKEN.read_text())
    d["config"]["version"] = "v2"  # a version kiln has no format for
    tok = tmp_path / "tekken_v2.json"
    tok.write_text(json.dumps(d))
    r = kiln_chat(kiln, tok, CASES["single"], tmp_path)
    assert r.returncode != 0 and "--chat-template" in r.stderr


def test_unknown_template_name(kiln, tmp_path):
    if not TEKKEN.exists():
        pytest.skip("SKIP: no tekken file")
    r = kiln_chat(kiln, TEKKEN, CASES["single"], tmp_path, "--chat-template", "vicuna")
    assert r.returncode != 0 and "unknown chat template" in r.stderr


@pytest.mark.parametrize("calls", [
    [{"name": "get_weather", "arguments": {"city": "Paris", "unit": "c"}}],
    [{"name": "search", "arguments": {"q": "kiln \"C\" engine", "n": 3}},
     {"name": "get_weather", "arguments": {"city": "東京"}}],
    [{"name": "noargs", "arguments": {}}],
])
def test_parse_tool_calls_from_v7_tokens(kiln, v7, calls):
    from mistral_common.protocol.instruct.messages import AssistantMessage
    from mistral_common.protocol.instruct.tool_calls import FunctionCall, ToolCall
    msg = AssistantMessage(tool_calls=[ToolCall(function=FunctionCall(name=c["name"], arguments=c["arguments"]))
                                       for c in calls])
    ids = v7.encode_assistant_message(msg, False)
    assert ids[-1] == 2
    r = subprocess.run([kiln, "tokenize", "--tokenizer", str(TEKKEN), "--tool-calls"],
                       input=" ".join(map(str, ids[:-1])), capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["content"] == ""
    tc = out["tool_calls"]
    assert [t["function"]["name"] for t in tc] == [c["name"] for c in calls]
    assert [json.loads(t["function"]["arguments"]) for t in tc] == [c["arguments"] for c in calls]
    for t in tc:
        assert t["type"] == "function" and re.fullmatch(r"[A-Za-z0-9]{9}", t["id"])


def test_parse_no_tool_calls(kiln, v7):
    ids = v7.tokenizer.encode("Just text.", bos=False, eos=False)
    r = subprocess.run([kiln, "tokenize", "--tokenizer", str(TEKKEN), "--tool-calls"],
                       input=" ".join(map(str, ids)), capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and json.loads(r.stdout) == {"content": "Just text.", "tool_calls": None}


# ---- ChatML (SmolLM2 GGUF) ----
CHATML_CASES = [
    {"messages": [{"role": "user", "content": "What is the capital of France?"}]},
    {"messages": [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hi"},
                  {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Bye <|im_end|> now"}]},
]


@pytest.mark.parametrize("i", range(len(CHATML_CASES)))
def test_chatml_smollm2_matches_template(kiln, default_gguf, tmp_path, i):
    jinja2 = pytest.importorskip("jinja2", reason="SKIP: jinja2 is not installed")
    gguf = pytest.importorskip("gguf", reason="SKIP: gguf is not installed")
    from test_tok_gguf_oracle import build_oracle
    plain = build_oracle(default_gguf, specials=False)  # message text is never parsed for specials
    r = gguf.GGUFReader(default_gguf)
    tmpl = bytes(r.fields["tokenizer.chat_template"].parts[-1]).decode()
    req = CHATML_CASES[i]
    # typed control text is hidden from the split below, then encoded back as plain text
    msgs = [dict(m, content=m["content"].replace("<|im_end|>", "\0")) for m in req["messages"]]
    text = jinja2.Environment().from_string(tmpl).render(messages=msgs, add_generation_prompt=True)
    assert "You are a helpful AI assistant named SmolLM" in text or msgs[0]["role"] == "system"
    want = []
    for piece in re.split(r"(<\|im_start\|>|<\|im_end\|>)", text):
        if piece in ("<|im_start|>", "<|im_end|>"):
            want.append(plain.token_to_id(piece))
        elif piece:
            want += plain.encode(piece.replace("\0", "<|im_end|>"), add_special_tokens=False).ids
    got = kiln_chat(kiln, default_gguf, req, tmp_path)
    assert got.returncode == 0, got.stderr
    assert [int(x) for x in got.stdout.split()] == want
