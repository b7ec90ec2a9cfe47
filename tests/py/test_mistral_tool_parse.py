"""Mistral tool-call and reasoning output read by kiln against mistral-common's own parser (issue 18).

Token streams are produced by mistral-common (InstructTokenizerV3/V7/V11/V13.encode_assistant_message,
over the package's v3 tekken file and fixture v7/v11/v13 files made from it, mistral_tekken.py)
and parsed back two ways: mistral-common's private parser (mistral_common.experimental.tools:
_split_content_and_tool_calls + _decode_tool_calls; experimental.think for [THINK] chunks) and
kiln's reader, the one `kiln serve` uses (server/mistral_tools.c), through `kiln tokenize
--tool-calls` (the whole answer) and `--tool-calls --stream` (the SSE chunks the server sends as
the text grows a token at a time, accumulated here as an OpenAI client accumulates
delta.tool_calls). Names, arguments (as JSON) and ids written by the model must agree with
mistral-common; the streamed calls concatenated must equal the whole ones byte for byte, with
the arguments coming in more than one piece. Skips loudly when the binary or the package is
missing."""
import json
import re
import subprocess
import tempfile

import pytest

mc = pytest.importorskip("mistral_common", reason="SKIP: mistral-common is not installed")
from mistral_common.experimental.think import _split_content_and_think_chunks  # noqa: E402
from mistral_common.experimental.tools import _decode_tool_calls, _split_content_and_tool_calls  # noqa: E402
from mistral_common.protocol.instruct.messages import AssistantMessage  # noqa: E402
from mistral_common.protocol.instruct.tool_calls import FunctionCall, ToolCall  # noqa: E402
from mistral_common.tokens.tokenizers.base import SpecialTokenPolicy  # noqa: E402
from mistral_common.tokens.tokenizers.mistral import MistralTokenizer  # noqa: E402
from mistral_tekken import make_tekken, package_tekken  # noqa: E402

CALLS = {
    "one": ("", [("get_weather", {"city": "Paris", "unit": "c"}, "abcDEF123")]),
    "two": ("", [("search", {"q": "kiln \"C\" engine", "n": 3}, "call00001"),
                 ("get_weather", {"city": "東京"}, "call00002")]),
    "noargs": ("", [("now", {}, "nowBBBB01")]),
    "nested": ("", [("edit", {"path": "a.c", "edits": [{"line": 1, "text": "}{ ]["}, {"line": 2, "text": "\\\"q\\\""}],
                              "ok": True, "x": None, "f": 1.5}, "editXXX01")]),
    "content_first": ("Let me check that for you.", [("get_weather", {"city": "Zürich 🙂"}, "abcDEF124")]),
    "three": ("", [("a", {"k": 1}, "aaaaaaaa1"), ("b", {"k": [2]}, "bbbbbbbb2"), ("c", {}, "ccccccccc")]),
}
VERSIONS = ["v3", "v7", "v11", "v13"]


@pytest.fixture(scope="module")
def tokenizers():
    src = package_tekken()
    if src is None:
        pytest.skip("SKIP: tekken_240911.json is not in the mistral-common package")
    d = tempfile.mkdtemp(prefix="kiln-tekken-")
    paths = {"v3": src, **{v: make_tekken(v, d) for v in VERSIONS[1:]}}
    return {v: (p, MistralTokenizer.from_file(str(p)).instruct_tokenizer) for v, p in paths.items()}


def encode(it, v, content, calls):
    if v == "v3" and content:
        pytest.skip("v3 takes no content with tool calls")
    msg = AssistantMessage(content=content or None, tool_calls=[
        ToolCall(id=i, function=FunctionCall(name=n, arguments=a)) for n, a, i in calls])
    ids = it.encode_assistant_message(msg, False)
    assert ids[-1] == it.tokenizer.eos_id
    return ids[:-1]


def oracle(it, ids):
    tok = it.tokenizer
    content, call_tokens = _split_content_and_tool_calls(ids, tok.get_special_token("[TOOL_CALLS]"))
    calls = _decode_tool_calls(call_tokens, tok)
    return tok.decode(content, special_token_policy=SpecialTokenPolicy.IGNORE), calls


def kiln_tc(kiln, path, ids, *args):
    r = subprocess.run([kiln, "tokenize", "--tokenizer", str(path), "--tool-calls", *args],
                       input=" ".join(map(str, ids)), capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout


def accumulate(stream_out):
    """what an OpenAI client builds from the chunks: content, reasoning, calls by index"""
    content, reasoning, calls, n_args = "", "", {}, {}
    for line in stream_out.splitlines():
        d = json.loads(line)["choices"][0]["delta"]
        content += d.get("content") or ""
        reasoning += d.get("reasoning_content") or ""
        for tc in d.get("tool_calls") or []:
            c = calls.setdefault(tc["index"], {"id": None, "type": None, "function": {"name": "", "arguments": ""}})
            c["id"] = tc.get("id") or c["id"]
            c["type"] = tc.get("type") or c["type"]
            f = tc.get("function") or {}
            c["function"]["name"] += f.get("name") or ""
            if f.get("arguments"):
                c["function"]["arguments"] += f["arguments"]
                n_args[tc["index"]] = n_args.get(tc["index"], 0) + 1
    return content, reasoning, [calls[i] for i in sorted(calls)], n_args


@pytest.mark.parametrize("v", VERSIONS)
@pytest.mark.parametrize("name", list(CALLS))
def test_calls_match_mistral_common(kiln, tokenizers, v, name):
    path, it = tokenizers[v]
    content, calls = CALLS[name]
    ids = encode(it, v, content, calls)
    want_content, want = oracle(it, ids)
    assert [c.function.name for c in want] == [c[0] for c in calls]  # the oracle reads its own output
    whole = json.loads(kiln_tc(kiln, path, ids))
    got = whole["tool_calls"]
    assert (whole["content"] or "") == want_content
    assert [c["function"]["name"] for c in got] == [c.function.name for c in want]
    assert [json.loads(c["function"]["arguments"]) for c in got] == [json.loads(c.function.arguments) for c in want]
    for c, w in zip(got, want):
        assert c["type"] == "function"
        if w.id and w.id != "null":  # the model wrote an id (v3 / v7 JSON, v11 [CALL_ID]): kept
            assert c["id"] == w.id
        else:  # v13 writes none: 9 alphanumerics, what the Mistral formats take back
            assert re.fullmatch(r"[A-Za-z0-9]{9}", c["id"]), c["id"]
    # streamed: the same calls, arguments in pieces for the [ARGS] forms and v7's usual layout
    s_content, _, s_calls, n_args = accumulate(kiln_tc(kiln, path, ids, "--stream"))
    assert s_content == (whole["content"] or "")
    assert [(c["function"]["name"], c["function"]["arguments"], c["type"]) for c in s_calls] == \
        [(c["function"]["name"], c["function"]["arguments"], c["type"]) for c in got]
    if v in ("v11", "v13"):
        assert [c["id"] for c in s_calls] == [c["id"] for c in got] or v == "v13"
    big = [i for i, (_, a, _) in enumerate(calls) if len(json.dumps(a)) > 12]
    for i in big:
        assert n_args.get(i, 0) > 1, f"call {i}: arguments in one piece"


@pytest.mark.parametrize("closed", [True, False])
def test_think_matches_mistral_common(kiln, tokenizers, closed):
    """v13 reasoning: [THINK] ... [/THINK] then content (and calls), split as mistral-common's
    experimental.think splits the tokens; an unclosed [THINK] is all reasoning"""
    path, it = tokenizers["v13"]
    tok = it.tokenizer
    th, eth = tok.get_special_token("[THINK]"), tok.get_special_token("[/THINK]")
    body = tok.encode("First, the city: 東京. Then [ARGS] as text.", bos=False, eos=False)
    ids = [th, *body] + ([eth, *encode(it, "v13", "Here it is.", CALLS["one"][1])] if closed else [])
    chunks = _split_content_and_think_chunks(ids, th, eth)
    want_reasoning = "".join(tok.decode([t for t in c if t not in (th, eth)]) for c, is_think in chunks if is_think)
    whole = json.loads(kiln_tc(kiln, path, ids))
    assert whole["reasoning_content"] == want_reasoning
    s_content, s_reasoning, s_calls, _ = accumulate(kiln_tc(kiln, path, ids, "--stream"))
    assert s_reasoning == want_reasoning
    if closed:
        content, calls = oracle(it, [t for c, is_think in chunks if not is_think for t in c])
        assert whole["content"] == content == s_content == "Here it is."
        assert [json.loads(c["function"]["arguments"]) for c in whole["tool_calls"]] == \
            [json.loads(c.function.arguments) for c in calls]
        assert [c["function"]["arguments"] for c in s_calls] == [c["function"]["arguments"] for c in whole["tool_calls"]]
    else:
        assert whole["tool_calls"] is None and whole["content"] == "" and s_content == ""


def test_marker_text_split_across_tokens_is_not_a_call(kiln, tokenizers):
    """"[TOOL_CALLS]" typed as plain text is a control token only when the model emits the token;
    the reader sees text, so plain text that spells it is read as a call marker too (as vLLM
    reads decoded text); plain '[' at the end of content is held, then sent"""
    path, it = tokenizers["v11"]
    ids = it.tokenizer.encode("Array: [1, 2] and [", bos=False, eos=False)
    whole = json.loads(kiln_tc(kiln, path, ids))
    assert whole == {"content": "Array: [1, 2] and [", "tool_calls": None}
    s_content, _, s_calls, _ = accumulate(kiln_tc(kiln, path, ids, "--stream"))
    assert s_content == "Array: [1, 2] and [" and s_calls == []
