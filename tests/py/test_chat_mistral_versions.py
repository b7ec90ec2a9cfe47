"""The Mistral chat formats v3, v7, v11 and v13 against mistral-common (issue 18), token for token.

Oracle: MistralTokenizer.from_file(tekken file) -> encode_chat_completion (the request validator
in mode "test", the version's normaliser and instruct tokenizer, chosen from config.version as
mistral-common chooses them). v3 is the package's tekken_240911.json; v7, v11 and v13 are
fixtures made from it at test time (mistral_tekken.py: the version set, the special tokens v11+
need added). kiln renders each of chat_cases.CONVERSATIONS (44: system prompts, multi-turn,
tools, tool calls and results, prefixes, consecutive roles, list content) with `kiln tokenize
--chat --batch` and no --chat-template (the format comes from the file's version), and must give
the same ids; CONVERSATIONS_V7 (content and calls in one message) for v7+. It also checks what
mistral-common refuses in v11/v13 only (tool results by id), that a version kiln does not render
(v15) is refused naming it, and that --chat-template mistral-v11 / mistral-v13 over a file of
another version gives the same ids as the matching file. Skips loudly when the binary or the
package is missing."""
import json
import subprocess

import pytest

mc = pytest.importorskip("mistral_common", reason="SKIP: mistral-common is not installed")
from mistral_common.protocol.instruct.request import ChatCompletionRequest  # noqa: E402
from mistral_common.tokens.tokenizers.mistral import MistralTokenizer  # noqa: E402
from chat_cases import CONVERSATIONS, CONVERSATIONS_V7, WEATHER, A, C, T, U  # noqa: E402
from mistral_tekken import make_tekken, package_tekken  # noqa: E402

VERSIONS = ["v3", "v7", "v11", "v13"]


@pytest.fixture(scope="module")
def tekkens(tmp_path_factory):
    src = package_tekken()
    if src is None:
        pytest.skip("SKIP: tekken_240911.json is not in the mistral-common package")
    d = tmp_path_factory.mktemp("tekken")
    out = {"v3": src}
    for v in VERSIONS[1:]:
        out[v] = make_tekken(v, d)
    return out


@pytest.fixture(scope="module")
def oracles(tekkens):
    out = {v: MistralTokenizer.from_file(str(p)) for v, p in tekkens.items()}
    for v, t in out.items():  # the fixture files select the version's instruct tokenizer
        assert type(t.instruct_tokenizer).__name__ == "InstructTokenizerV" + v[1:]
    return out


def oracle(oracles, v, req):
    try:
        return oracles[v].encode_chat_completion(ChatCompletionRequest(**req)).tokens
    except Exception as e:  # noqa: BLE001 (any refusal)
        return "error: " + str(e)


def kiln_batch(kiln, tok, reqs, tmp_path, *args):
    p = tmp_path / "reqs.json"
    p.write_text(json.dumps(reqs))
    r = subprocess.run([kiln, "tokenize", "--tokenizer", str(tok), "--chat", str(p), "--batch", *args],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == len(reqs), r.stdout
    return [ln if ln.startswith("error: ") else [int(x) for x in ln.split()] for ln in lines]


@pytest.mark.parametrize("v", VERSIONS)
def test_conversations_match_mistral_common(kiln, tekkens, oracles, tmp_path, v):
    cases = dict(CONVERSATIONS, **(CONVERSATIONS_V7 if v != "v3" else {}))
    assert len(CONVERSATIONS) >= 40
    got = kiln_batch(kiln, tekkens[v], list(cases.values()), tmp_path)
    bad = []
    for (name, req), g in zip(cases.items(), got):
        want = oracle(oracles, v, req)
        assert not isinstance(want, str), f"{v} {name}: mistral-common refused it: {want}"
        if g != want:
            bad.append(f"{name}: kiln {g}\n   mistral-common {want}")
    assert not bad, f"{v}: {len(bad)} of {len(cases)} differ:\n" + "\n".join(bad)


def test_v11_v13_differ_where_they_should(tekkens, oracles):
    """the fixtures exercise what is new: v11 calls carry [CALL_ID], v13 calls do not and put the
    tools in the first user message (a check on the oracle and the fixture, not on kiln)"""
    req = CONVERSATIONS["c31_calls_across_turns"]
    ids = {v: oracle(oracles, v, req) for v in ("v11", "v13")}
    tok = oracles["v11"].instruct_tokenizer.tokenizer
    call_id, args = tok.get_special_token("[CALL_ID]"), tok.get_special_token("[ARGS]")
    assert ids["v11"].count(call_id) == 2 and ids["v11"].count(args) == 2
    assert call_id not in ids["v13"] and ids["v13"].count(args) == 2
    tools = tok.get_special_token("[AVAILABLE_TOOLS]")
    assert ids["v13"].index(tools) < ids["v13"].index(tok.get_special_token("[INST]"))


REFUSED_V11 = {  # by id, v11 and v13 only (the validator V11's pairing)
    "unexpected_id": [U("a"), A(None, tool_calls=[C("get_weather", "{}", "call00001")]), T("x", "call00009")],
    "duplicate_result": [U("a"), A(None, tool_calls=[C("get_weather", "{}", "call00001"),
                                                     C("get_weather", "{}", "call00002")]),
                         T("x", "call00001"), T("y", "call00001")],
    "duplicate_call_id": [U("a"), A(None, tool_calls=[C("get_weather", "{}", "call00001"),
                                                      C("get_weather", "{}", "call00001")]),
                          T("x", "call00001"), T("y", "call00001")],
}


@pytest.mark.parametrize("v", ["v11", "v13"])
def test_refused_by_id_pairing(kiln, tekkens, oracles, tmp_path, v):
    reqs = [{"messages": m, "tools": [WEATHER]} for m in REFUSED_V11.values()]
    got = kiln_batch(kiln, tekkens[v], reqs, tmp_path)
    for name, req, g in zip(REFUSED_V11, reqs, got):
        assert isinstance(oracle(oracles, v, req), str), f"{name}: mistral-common accepted it"
        assert isinstance(g, str) and "chat:" in g and "tool call id" in g, f"{name}: {g}"


def test_v13_call_ids_need_not_be_9_characters(kiln, tekkens, oracles, tmp_path):
    """v13's validator takes any id but "" and "null"; v11's wants 9 alphanumerics"""
    req = {"messages": [U("a"), A(None, tool_calls=[C("get_weather", "{\"city\": \"Oslo\"}", "call_abc-1")]),
                        T("x", "call_abc-1")], "tools": [WEATHER]}
    g13, g11 = (kiln_batch(kiln, tekkens[v], [req], tmp_path)[0] for v in ("v13", "v11"))
    assert g13 == oracle(oracles, "v13", req)
    assert isinstance(oracle(oracles, "v11", req), str) and isinstance(g11, str) and "id" in g11


def test_unknown_version_refused_by_name(kiln, tekkens, tmp_path):
    d = json.loads(tekkens["v13"].read_text())
    d["config"]["version"] = "v15"
    p = tmp_path / "tekken_v15.json"
    p.write_text(json.dumps(d))
    got = kiln_batch(kiln, p, [CONVERSATIONS["c01_single"]], tmp_path)[0]
    assert isinstance(got, str) and '"v15"' in got and "--chat-template" in got, got


@pytest.mark.parametrize("v", ["v11", "v13"])
def test_template_name_over_other_file(kiln, tekkens, oracles, tmp_path, v):
    """--chat-template mistral-v11 / -v13 renders a file of another version (its special tokens
    permitting) as the matching file does"""
    other = tekkens["v13" if v == "v11" else "v11"]
    reqs = [CONVERSATIONS[k] for k in ("c26_two_calls", "c23_tools_system", "c15_prefix")]
    got = kiln_batch(kiln, other, reqs, tmp_path, "--chat-template", "mistral-" + v)
    assert got == [oracle(oracles, v, r) for r in reqs]


def test_thinking_v13_matches_mistral_common(kiln, tekkens, oracles, tmp_path):
    """v13 renders an assistant's thinking (a "thinking" part, or reasoning_content) as
    [THINK] ... [/THINK] with the text chunks as given, as InstructTokenizerV13 does"""
    from chat_cases import CONVERSATIONS_REASONING, CONVERSATIONS_THINK
    reqs = list(CONVERSATIONS_THINK.values()) + list(CONVERSATIONS_REASONING.values())
    got = kiln_batch(kiln, tekkens["v13"], reqs, tmp_path)
    want = [oracle(oracles, "v13", r) for r in CONVERSATIONS_THINK.values()]
    for r in CONVERSATIONS_REASONING.values():
        want.append(oracles["v13"].encode_chat_completion(
            ChatCompletionRequest.from_openai(messages=r["messages"], tools=r.get("tools"))).tokens)
    names = list(CONVERSATIONS_THINK) + list(CONVERSATIONS_REASONING)
    think = oracles["v13"].instruct_tokenizer.tokenizer.get_special_token("[THINK]")
    for name, g, w in zip(names, got, want):
        assert not isinstance(w, str), f"{name}: mistral-common refused it: {w}"
        assert think in w
        assert g == w, f"{name}:\n kiln {g}\n mistral-common {w}"


@pytest.mark.parametrize("v", ["v3", "v7", "v11"])
def test_thinking_refused_before_v13(kiln, tekkens, oracles, tmp_path, v):
    from chat_cases import CONVERSATIONS_THINK
    req = CONVERSATIONS_THINK["t01_think_then_text"]
    assert isinstance(oracle(oracles, v, req), str)  # mistral-common refuses it too
    g = kiln_batch(kiln, tekkens[v], [req], tmp_path)[0]
    assert isinstance(g, str) and "thinking" in g and "mistral-v13" in g, g
