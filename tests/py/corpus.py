"""Tokenizer test corpus: >= 300 strings that stress tokenizers, plus invalid UTF-8 bytes.

TEXTS: valid Unicode strings (code in several languages, whitespace runs, CJK, emoji, combining
marks, numbers, text that looks like control tokens, very long words, ...). INVALID: byte
strings that are not valid UTF-8; kiln's defined behaviour is to tokenize them as if each
maximal invalid subpart were U+FFFD (Python's bytes.decode("utf-8", "replace")).
"""

CODE = [
    "def f(x):\n    return x ** 2\n",
    "for (int i = 0; i < n; i++) {\n\tsum += a[i];\n}",
    "#include <stdio.h>\nint main(void) { printf(\"hi\\n\"); return 0; }\n",
    "fn main() { let v: Vec<u8> = vec![1, 2, 3]; println!(\"{:?}\", v); }",
    "SELECT id, name FROM users WHERE age >= 21 ORDER BY name DESC;",
    "const x = async () => { await fetch('/api?q=1&r=2'); };",
    "class Foo(Bar):\n    \"\"\"Docstring.\"\"\"\n    __slots__ = ('a', 'b')\n",
    "<div class=\"a\"><span id='b'>text</span></div>",
    "{\"key\": [1, 2.5, -3e10, true, null], \"nested\": {\"a\": \"b\"}}",
    "package main\n\nimport \"fmt\"\n\nfunc main() {\n\tfmt.Println(\"hello\")\n}\n",
    "#!/bin/bash\nset -euo pipefail\nfor f in *.txt; do echo \"$f\"; done",
    "public static void main(String[] args) { System.out.println(args.length); }",
    "x = [i**2 for i in range(10) if i % 2 == 0]  # squares",
    "if (a && b || !c) { return a ? b : c; } else if (d != e) { x >>= 2; }",
    "template<typename T> struct S { T v; S() : v{} {} };",
    "    indented\n        more\n\t\ttabs\n",
    "a=1;b=2;c=a+b;print(c)",
    "std::vector<std::pair<int,int>> v; v.emplace_back(1, 2);",
    "let re = /^[a-z0-9_-]{3,16}$/i;",
    "matrix[i][j] = matrix[i-1][j-1] + 1 if s[i] == t[j] else 0",
    "-- comment\nlocal t = {1, 2, 3}\nfor k, v in ipairs(t) do print(k, v) end",
    "@decorator(arg=1)\nasync def handler(request: Request) -> Response: ...",
    "README.md: ## Install\n```sh\npip install -e .[dev]\n```",
    "0x1F, 0b1010, 1_000_000, 3.14e-10, .5, 5., -0",
    "i++; --j; k += 1; l -= 2; m *= 3; n /= 4; o %= 5;",
    "\"escaped \\\"quotes\\\" and \\\\ backslashes\"",
    "path/to/file.txt C:\\Windows\\System32 ~/home/user/.config",
    "https://example.com/path?query=value&other=1#fragment",
    "user@example.com, admin+tag@sub.domain.org",
    "$ git commit -m 'fix: handle edge case (#123)'",
]

WHITESPACE = [
    " ", "  ", "   ", "    ", "\t", "\t\t", "\n", "\n\n", "\n\n\n", "\r\n", " \n ", "\n \n",
    "a  b", "a   b", "a    b", "a\tb", "a\t\tb", "a\nb", "a\n\nb", "a\r\nb", " leading", "trailing ",
    "  both  ", "\tTab start", "end tab\t", "mixed \t \n whitespace", "                                spaces",
    "a \u00a0b", "non\u2003breaking\u2009thin", "ideographic\u3000space", "zero\u200bwidth",
    "\u2028line sep", "x\u00a0\u00a0y", "\v\f", " \t\n\r ",
]

CJK = [
    "日本語のテキスト", "中文测试句子。", "한국어 문장입니다.", "東京は日本の首都です。", "我爱自然语言处理",
    "カタカナとひらがな", "混合 mixed 文本 text", "漢字", "「引用」と『二重引用』", "全角ＡＢＣ１２３",
    "汉字，标点；符号！", "ㄱㄴㄷ", "ｈａｌｆ　ｗｉｄｔｈ", "中" * 50, "日本" + " " * 5 + "語",
]

EMOJI = [
    "😀", "😀😃😄", "👍🏽", "👨‍👩‍👧‍👦", "🇫🇷🇯🇵", "❤️", "I ❤ NY", "🎉 party 🎉", "🤖🦾", "✅ done ❌ not",
    "emoji😀inside", "🧑🏿‍🚀", "©®™", "☃", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "𝟘𝟙𝟚", "🏳️‍🌈", "😀" * 20,
]

COMBINING = [
    "e\u0301", "cafe\u0301", "caf\u00e9", "n\u0303", "a\u0308o\u0308u\u0308", "Z\u0351\u0364\u0363a\u0306l\u0313g\u0313o",
    "\u0915\u094d\u0937", "नमस्ते", "ﬁ ligature", "Å vs A\u030a", "ǅ", "İstanbul", "straße", "ΑΒΓ αβγ",
    "Привет, мир!", "مرحبا بالعالم", "שלום עולם", "ไทย ภาษา", "Ünïcödé café naïve", "Ωmega ω", "ǆemal",
    "e\u0301\u0301\u0301", "\u0301start", "x\u20dd", "ḁ̶̢", "Việt Nam", "Ελληνικά", "ქართული", "Հայերեն", "አማርኛ",
]

NUMBERS = [
    "0", "1", "12", "123", "1234", "12345", "123456789", "1234567890", "3.14159", "-42", "+7", "1e10",
    "1,000,000", "1.000.000,50", "2024-01-31", "12:34:56", "0.0001", "99%", "$1.99", "€5", "½ ¾", "٣٤٥",
    "१२३", "Ⅻ", "①②③", "10^9+7", "2**64", "007", "1st 2nd 3rd 4th", "pi=3.141592653589793238462643383279",
]

CONTROL_LIKE = [
    "<s>", "</s>", "<unk>", "<pad>", "[INST]", "[/INST]", "[INST] hi [/INST]", "<s>[INST] x [/INST]</s>",
    "<|start_story|>", "<|end_story|>", "<|start_story|>Once<|end_story|>", "<|endoftext|>", "<|im_start|>user",
    "<|eot_id|>", "[TOOL_CALLS]", "[AVAILABLE_TOOLS]", "<SPECIAL_42>", "<0x0A>", "<0xFF>", "<0x41><0x42>",
    "< s >", "<<s>>", "[[INST]]", "<|", "|>", "<|start_story", "start_story|>", "[SYSTEM_PROMPT]sys[/SYSTEM_PROMPT]",
    "</s></s></s>", "text<s>text", "▁", "▁▁x", "Ġhello", "Ċ", "ĠĠ", "\u2581leading meta",
]

LONG = [
    "a" * 300, "ab" * 150, "supercalifragilisticexpialidocious" * 4, "x" * 1000, "Lorem ipsum " * 40,
    "pneumonoultramicroscopicsilicovolcanoconiosis", "z" * 5000, "-" * 100, "=" * 80, "." * 64, "!?" * 30,
    "0123456789" * 20, "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaab", " " * 200, "\n" * 50,
    "ÿ" * 100, "日本語" * 100, "word " * 200,
]

PROSE = [
    "Hello world", "Hello, world!", "Once upon a time", "The quick brown fox jumps over the lazy dog.",
    "Lily and Tom went to the park. They saw a big dog.", "don't won't I'm you're they've we'll it's",
    "It's a beautiful day, isn't it?", "\"Quoted\" and 'single' and `back`", "Mr. Smith went to Washington.",
    "e.g. i.e. etc. vs.", "ALL CAPS SENTENCE", "camelCaseWord snake_case_word kebab-case-word",
    "HTTPServer XMLHttpRequest iPhone eBay", "O'Neil's", "rock 'n' roll", "(parenthetical) [bracketed] {braced}",
    "semi;colon:colon", "ellipsis... and—em-dash – en-dash", "«guillemets» „quotes“ “curly” ‘single’",
    "Tom said, \"Let's go!\"", "Why? Because!", "a", "A", "I", "ok", "Ok.", "The end.",
]


def _generated():
    out = []
    words = ["the", "cat", "日本", "😀", "café", "123", "<s>", "\t", "  ", "x_y", "Ünï", "!", "\n", "don't"]
    # deterministic combinations of pairs and triples of pieces
    for i, a in enumerate(words):
        for j, b in enumerate(words):
            if (i * 7 + j * 3) % 4 == 0:
                out.append(a + b)
                out.append(a + " " + b)
    for i in range(60):
        a, b, c = words[i % len(words)], words[(i * 5 + 1) % len(words)], words[(i * 11 + 2) % len(words)]
        out.append(f"{a}{b} {c}")
    return out


TEXTS = CODE + WHITESPACE + CJK + EMOJI + COMBINING + NUMBERS + CONTROL_LIKE + LONG + PROSE + _generated()
TEXTS = list(dict.fromkeys(TEXTS))  # unique, order kept

INVALID = [
    b"\xff", b"\xfe\xff", b"a\x80b", b"\xc0\xaf", b"\xe6\x97", b"\xe6\x97\xa5\xe6", b"\xf0\x9f\x98",
    b"\xed\xa0\x80", b"ok\xf4\x90\x80\x80!", b"\x80\x80\x80", b"abc\xc3", b"\xc3\x28", b"\xe2\x82\x28",
    b"mixed \xe6\x97\xa5\xff\xe6\x9c\xac valid",
]

assert len(TEXTS) >= 300, len(TEXTS)
