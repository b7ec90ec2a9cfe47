"""structured_cases.py: the constrained-decoding sample sets shared by test_structured.py (a
CI-sized count) and scripts/structured_samples.py (the issue's 1,000 samples per set).

Each set is (name, request fields, check(text) -> None or raises): seeded chat requests to the
default model (SmolLM2-135M-Instruct, not trained for JSON or tools) at temperature 1. A sample
whose finish_reason is "stop" must pass its check; "length" finishes are counted and reported
(never forced closed).
"""
import json
import re
import threading

import jsonschema

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 12},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "role": {"enum": ["admin", "user", "guest"]},
        "score": {"type": "number", "minimum": -10, "maximum": 10},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 8}, "maxItems": 3},
        "address": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 16},
                "zip": {"type": "string", "pattern": "^[0-9]{5}$"},
            },
            "required": ["city"],
            "additionalProperties": False,
        },
        "active": {"type": "boolean"},
        "nickname": {"type": "string", "maxLength": 8},
    },
    "required": ["name", "age", "role", "address"],
    "additionalProperties": False,
}

REGEXES = [r"\(\d{3}\) \d{3}-\d{4}", r"[a-z]{1,10}@[a-z]{1,10}\.(com|org|net)"]
CHOICES = ["positive", "negative", "neutral"]

# GBNF grammars with a Python regex that accepts exactly their language
GRAMMARS = [
    ('root ::= "yes" | "no"', r"yes|no"),
    ('root ::= expr\nexpr ::= term (("+" | "-") term){0,4}\nterm ::= [0-9]{1,3}', r"\d{1,3}([+-]\d{1,3}){0,4}"),
    ('root ::= date ("," date){0,2}\ndate ::= [0-9]{4} "-" [01] [0-9] "-" [0-3] [0-9]',
     r"\d{4}-[01]\d-[0-3]\d(,\d{4}-[01]\d-[0-3]\d){0,2}"),
    ('root ::= "{\\"k\\": " /[1-9][0-9]{0,5}/ ", \\"ok\\": " ("true" | "false") "}"', r'\{"k": [1-9]\d{0,5}, "ok": (true|false)\}'),
    ('root ::= item{1,4}\nitem ::= [A-Z] [a-z]{1,6} "."', r"([A-Z][a-z]{1,6}\.){1,4}"),
]

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather of a city",
    "parameters": {"type": "object", "properties": {
        "city": {"type": "string", "maxLength": 20},
        "unit": {"enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 7}},
        "required": ["city", "unit"], "additionalProperties": False}}}
SEARCH = {"type": "function", "function": {
    "name": "search", "description": "Search the web",
    "parameters": {"type": "object", "properties": {
        "query": {"type": "string", "maxLength": 30},
        "limit": {"type": "integer", "minimum": 1, "maximum": 10}},
        "required": ["query"], "additionalProperties": False}}}
TOOLS = [WEATHER, SEARCH]


def sets():
    """[(name, prompt, extra request fields, check)]"""
    out = []

    def check_schema(t):
        jsonschema.validate(json.loads(t), SCHEMA)
    out.append(("json_schema", "Give me a user profile as JSON.",
                {"response_format": {"type": "json_schema", "json_schema": {"name": "profile", "strict": True, "schema": SCHEMA}}},
                check_schema, 200))
    for i, rx in enumerate(REGEXES):
        def check_rx(t, rx=rx):
            assert re.fullmatch(rx, t), f"{t!r} !~ {rx}"
        out.append((f"regex{i}", "Write a phone number." if i == 0 else "Write an email address.",
                    {"extra_body": {"structured_outputs": {"regex": rx}}}, check_rx, 40))

    def check_choice(t):
        assert t in CHOICES, t
    out.append(("choice", "Is 'I love it' positive, negative or neutral?", {"extra_body": {"guided_choice": CHOICES}},
                check_choice, 10))
    for i, (g, rx) in enumerate(GRAMMARS):
        def check_g(t, rx=rx):
            assert re.fullmatch(rx, t), f"{t!r} !~ {rx}"
        out.append((f"grammar{i}", "Answer.", {"extra_body": {"structured_outputs": {"grammar": g}}}, check_g, 60))
    return out


def tool_sets():
    """[(name, request fields, allowed names, single)] of forced tool calls"""
    named = {"type": "function", "function": {"name": "get_weather"}}
    return [("tools_named", {"tool_choice": named}, {"get_weather"}, False),
            ("tools_required", {"tool_choice": "required"}, {"get_weather", "search"}, False),
            ("tools_named_single", {"tool_choice": named, "parallel_tool_calls": False}, {"get_weather"}, True)]


TOOL_PROMPT = "What is the weather in Paris? Also search for news."


def check_calls(calls, allowed, single):
    assert calls, "no tool call"
    if single:
        assert len(calls) == 1, len(calls)
    schemas = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
    for c in calls:
        assert c.type == "function" and c.id
        assert c.function.name in allowed, c.function.name
        jsonschema.validate(json.loads(c.function.arguments), schemas[c.function.name])


def run_tools(client, model, fields, allowed, single, n, seed0=500, workers=8, max_tokens=300):
    """n seeded forced-tool answers -> (n_ok, n_length, failures)"""
    res = [None] * n
    lock = threading.Lock()
    idx = iter(range(n))

    def worker():
        while True:
            with lock:
                i = next(idx, None)
            if i is None:
                return
            try:
                r = client.chat.completions.create(model=model, messages=[{"role": "user", "content": TOOL_PROMPT}], tools=TOOLS,
                                                   temperature=1.0, seed=seed0 + i, max_tokens=max_tokens, **fields)
                res[i] = r.choices[0]
            except Exception as e:  # noqa: BLE001 (a failed request is a failure of its sample)
                res[i] = e
    ts = [threading.Thread(target=worker) for _ in range(workers)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    ok, length, fails = 0, 0, []
    for i, ch in enumerate(res):
        if isinstance(ch, Exception):
            fails.append((seed0 + i, "", "request failed: " + repr(ch)))
            continue
        if ch.finish_reason == "length":
            length += 1
            continue
        try:
            assert ch.finish_reason == "tool_calls", ch.finish_reason
            check_calls(ch.message.tool_calls, allowed, single)
            ok += 1
        except Exception as e:  # noqa: BLE001
            fails.append((seed0 + i, str(ch.message), repr(e)))
    return ok, length, fails


def run_set(client, model, prompt, fields, check, max_tokens, n, seed0=1000, workers=8):
    """n seeded samples -> (n_stop_ok, n_length, failures [(seed, text, error)])"""
    res = [None] * n
    lock = threading.Lock()
    idx = iter(range(n))

    def worker():
        while True:
            with lock:
                i = next(idx, None)
            if i is None:
                return
            kw = dict(fields)
            extra = kw.pop("extra_body", None)
            try:
                r = client.chat.completions.create(model=model, messages=[{"role": "user", "content": prompt}],
                                                   temperature=1.0, seed=seed0 + i, max_tokens=max_tokens,
                                                   extra_body=extra, **kw)
                res[i] = (r.choices[0].finish_reason, r.choices[0].message.content or "")
            except Exception as e:  # noqa: BLE001 (a failed request is a failure of its sample)
                res[i] = ("error", repr(e))
    ts = [threading.Thread(target=worker) for _ in range(workers)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    ok, length, fails = 0, 0, []
    for i, (fin, text) in enumerate(res):
        if fin == "length":
            length += 1
            continue
        try:
            assert fin == "stop", f"finish_reason {fin}"
            check(text)
            ok += 1
        except Exception as e:  # noqa: BLE001 (collected and reported)
            fails.append((seed0 + i, text, repr(e)))
    return ok, length, fails
