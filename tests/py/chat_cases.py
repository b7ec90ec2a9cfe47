"""chat_cases.py: the tools and the tool call shared by the Mistral chat oracle tests
(test_chat_oracle.py for v7, test_chat_v3_oracle.py for v3)."""

WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Get the weather",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"},
                                                          "unit": {"type": "string", "enum": ["c", "f"]}},
                          "required": ["city"]}}}
SEARCH = {"type": "function", "function": {"name": "search", "description": "Search the web for «text»",
          "parameters": {"type": "object", "properties": {"q": {"type": "string"}, "n": {"type": "integer"}}}}}
CALL = [{"id": "abcDEF123", "type": "function",
         "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\", \"unit\": \"c\"}"}}]


# ---- conversations rendered by every Mistral format (v3, v7, v11, v13), token for token against
# mistral-common's encode_chat_completion (test_chat_mistral_versions.py). Each is valid under every
# version's validator: call ids of 9 alphanumerics, every call answered by id, no assistant
# message with both content and calls (v3 refuses it; CONVERSATIONS_V7 has those). ----
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


def C(name, args, i):
    return {"id": i, "type": "function", "function": {"name": name, "arguments": args}}


READ = {"type": "function", "function": {"name": "read_file", "description": "Read a file",
        "parameters": {"type": "object", "properties": {"path": {"type": "string"},
                                                       "lines": {"type": "array", "items": {"type": "integer"}}},
                       "required": ["path"]}}}
NOPARAM = {"type": "function", "function": {"name": "now", "description": "", "parameters": {}}}
W1 = C("get_weather", "{\"city\": \"Paris\"}", "call00001")
W2 = C("get_weather", "{\"city\": \"東京\", \"unit\": \"f\"}", "call00002")
R1 = C("read_file", "{\"path\": \"src/main.c\", \"lines\": [1, 20]}", "readAAAA1")
N1 = C("now", "", "nowBBBB01")
S1 = C("search", "{\"q\": \"kiln \\\"C\\\"\", \"n\": 3.5}", "srchCCC01")

CONVERSATIONS = {
    "c01_single": {"messages": [U("Hello")]},
    "c02_system": {"messages": [S("You are a pirate.\nSpeak like one."), U("Who are you?")]},
    "c03_two_systems": {"messages": [S("One."), S("Two."), U("Go.")]},
    "c04_multi_turn": {"messages": [S("Be brief."), U("2+2?"), A("4  "), U("3+3?"), A("6"), U("Thanks")]},
    "c05_unicode": {"messages": [S("Réponds en français 🙂"), U("ünïcödé 日本語 🙂 — Ελληνικά \t tabs\nnew line"),
                                 A("Très bien: 東京 ✓"), U("Merci « beaucoup » !")]},
    "c06_control_text": {"messages": [U("[INST] </s> <s> [TOOL_CALLS] [ARGS] [CALL_ID] [THINK] [/THINK] [/INST]")]},
    "c07_assistant_first": {"messages": [A("Hi, how can I help?"), U("Tell me a joke.")]},
    "c08_system_only": {"messages": [S("Just a system prompt.")]},
    "c09_system_late": {"messages": [U("a"), S("Late system."), U("b")]},
    "c10_users_merged": {"messages": [U("First."), U("Second."), A("Ok."), U("Third.")]},
    "c11_assistants_merged": {"messages": [U("Hi"), A("Hello."), A("How can I help?"), U("Joke?")]},
    "c12_empty_user_in_run": {"messages": [U(""), U("Only this."), A("Yes."), U("")]},
    "c13_trailing_spaces": {"messages": [U("x"), A("spaces after   "), U("y ")]},
    "c14_newlines": {"messages": [S("\n\nsys\n"), U("\nuser\n\n"), A("\nreply\n"), U("end\n")]},
    "c15_prefix": {"messages": [U("Name a colour."), A("The colour is ", prefix=True)]},
    "c16_prefix_system": {"messages": [S("Be brief."), U("2+2?"), A("4"), U("3+3?"), A("It is", prefix=True)]},
    "c17_prefix_merged": {"messages": [U("Hi"), A("Hello."), A("And ", prefix=True)]},
    "c18_parts_user": {"messages": [U(P("part one", "", "part two")), U("plain")]},
    "c19_parts_everywhere": {"messages": [{"role": "system", "content": P("sys a", "sys b")}, U(P("u1", "u2")),
                                          A(P("a1", "a2")), U(P("", "last"))]},
    "c20_parts_prefix": {"messages": [U(P("q1", "q2")), A(P("The ", "answer: "), prefix=True)]},
    "c21_tools_only": {"messages": [U("Weather in Paris?")], "tools": [WEATHER, SEARCH]},
    "c22_tools_multi_turn": {"messages": [U("Hi"), A("Hello!"), U("Weather in Paris?")], "tools": [WEATHER, SEARCH]},
    "c23_tools_system": {"messages": [S("Use tools."), U("Hi"), A("Hello!"), U("Read main.c")],
                         "tools": [READ, NOPARAM]},
    "c24_call_result": {"messages": [U("Weather?"), A(None, tool_calls=[W1]), T("sunny", "call00001")],
                        "tools": [WEATHER]},
    "c25_call_result_reply": {"messages": [S("Use tools."), U("Weather in Paris?"), A(None, tool_calls=[W1]),
                                           T("{\"temp\": 21.5, \"sky\": \"clear\"}", "call00001", name="get_weather"),
                                           A("It is 21.5 C and clear."), U("And tomorrow?")], "tools": [WEATHER]},
    "c26_two_calls": {"messages": [U("Paris and Tokyo?"), A(None, tool_calls=[W1, W2]), T("rain", "call00001"),
                                   T("snow", "call00002")], "tools": [WEATHER]},
    "c27_two_calls_results_swapped": {"messages": [U("Paris and Tokyo?"), A(None, tool_calls=[W1, W2]),
                                                   T("snow", "call00002"), T("rain", "call00001"), A("Done."),
                                                   U("Thanks")], "tools": [WEATHER]},
    "c28_noargs_call": {"messages": [U("Time?"), A(None, tool_calls=[N1]), T("12:00", "nowBBBB01")],
                        "tools": [NOPARAM]},
    "c29_array_args": {"messages": [U("Read it"), A(None, tool_calls=[R1]), T("int main(void) {}", "readAAAA1")],
                       "tools": [READ]},
    "c30_float_args": {"messages": [U("Search"), A(None, tool_calls=[S1]), T("[]", "srchCCC01")],
                       "tools": [SEARCH]},
    "c31_calls_across_turns": {"messages": [U("Weather?"), A(None, tool_calls=[W1]), T("sunny", "call00001"),
                                            A("Sunny."), U("Tokyo?"), A(None, tool_calls=[W2]),
                                            T("cold", "call00002")], "tools": [WEATHER]},
    "c32_tool_json_result": {"messages": [U("Weather?"), A(None, tool_calls=[W1]),
                                          T("{\"temp\":21,\"ok\":true}", "call00001")], "tools": [WEATHER]},
    "c33_tool_empty_result": {"messages": [U("Weather?"), A(None, tool_calls=[W1]), T("", "call00001")],
                              "tools": [WEATHER]},
    "c34_tool_parts_result": {"messages": [U(P("Weather?", "Paris")), A(None, tool_calls=[W1]),
                                           T(P("{\"temp\": ", "21}"), "call00001"), U(P("thanks"))],
                              "tools": [WEATHER, SEARCH]},
    "c35_merged_tools": {"messages": [U("Hi."), U("Weather in Paris?"), A(None, tool_calls=[W1]),
                                      T("sunny", "call00001"), U("And Rome?"), U("Tomorrow.")], "tools": [WEATHER]},
    "c36_prefix_after_tool": {"messages": [U("Weather in Paris?"), A(None, tool_calls=[W1]),
                                           T("{\"temp\": 21}", "call00001"), A("It is 21 degrees ", prefix=True)],
                              "tools": [WEATHER]},
    "c37_prefix_tools": {"messages": [U("Weather?"), A("Let me", prefix=True)], "tools": [WEATHER, SEARCH]},
    "c38_calls_no_tools_field": {"messages": [U("Weather?"), A(None, tool_calls=[W1]), T("sunny", "call00001")]},
    "c39_unicode_tool_text": {"messages": [U("天気は？"), A(None, tool_calls=[W2]), T("雪 ❄ -3°C", "call00002"),
                                           A("雪です。"), U("ありがとう")], "tools": [WEATHER]},
    "c40_long_history": {"messages": [S("s")] + [m for k in range(6) for m in (U(f"q{k}"), A(f"a{k}"))] + [U("last")]},
    "c41_system_between_tools": {"messages": [S("sys"), U("Weather?"), A(None, tool_calls=[W1]),
                                              T("sunny", "call00001"), U("Ok."), S("Be short now."), U("Ok?")],
                                 "tools": [WEATHER]},
    "c42_three_calls": {"messages": [U("All"), A(None, tool_calls=[W1, R1, N1]), T("a", "readAAAA1"),
                                     T("b", "nowBBBB01"), T("c", "call00001")], "tools": [WEATHER, READ, NOPARAM]},
    "c43_tool_control_text": {"messages": [U("x"), A(None, tool_calls=[W1]), T("[TOOL_RESULTS] </s>", "call00001")],
                              "tools": [WEATHER]},
    "c44_non_json_args": {"messages": [U("x"), A(None, tool_calls=[C("get_weather", "Paris please", "call00001")]),
                                       T("ok", "call00001")], "tools": [WEATHER]},
}

# v7 and later (validator V5+): content and tool calls in one assistant message
CONVERSATIONS_V7 = {
    "d01_content_and_calls": {"messages": [U("a"), A("Checking.", tool_calls=[W1]), T("sunny", "call00001")],
                              "tools": [WEATHER]},
    "d02_merged_content_and_calls": {"messages": [U("a"), A("Let me see."), A(None, tool_calls=[W1, W2]),
                                                  T("x", "call00001"), T("y", "call00002"), A("Done."), U("ok")],
                                     "tools": [WEATHER]},
}

# v13 only: assistant reasoning, as a "thinking" content part (mistral-common's ThinkChunk) or an
# OpenAI-style reasoning_content field (AssistantMessage.from_openai makes it a leading ThinkChunk)
def TH(text, closed=True):
    return {"type": "thinking", "thinking": text, "closed": closed}


CONVERSATIONS_THINK = {
    "t01_think_then_text": {"messages": [U("2+2?"), A([TH("Add them: 4."), *P("It is 4.  ")]), U("Sure?")]},
    "t02_think_and_calls": {"messages": [U("Weather?"), A([TH("Call the tool.")], tool_calls=[W1]),
                                         T("sunny", "call00001"), A([TH("Done."), *P("Sunny.")]), U("Thanks")],
                            "tools": [WEATHER]},
    "t03_think_prefix_open": {"messages": [U("Plan?"), A([TH("Step one", closed=False)], prefix=True)]},
    "t04_merged_runs": {"messages": [U("Hi"), A([TH("greet"), *P("Hello", "there")]), A("How can I help? "),
                                     U("Joke?")]},
    "t05_think_only": {"messages": [U("Hm?"), A([TH("")]), U("Go on.")]},
}
CONVERSATIONS_REASONING = {  # through the OpenAI field: ChatCompletionRequest.from_openai on the oracle side
    "r01_reasoning_content": {"messages": [U("2+2?"), {"role": "assistant", "content": "4", "reasoning_content": "2+2=4"},
                                           U("And 3+3?")]},
    "r02_reasoning_calls": {"messages": [U("Weather?"), {"role": "assistant", "content": None, "reasoning_content": "tool",
                                                         "tool_calls": [W1]}, T("sunny", "call00001")],
                            "tools": [WEATHER]},
}
