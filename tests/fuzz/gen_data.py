#!/usr/bin/env python3
"""gen_data.py: writes the hand-made tokenizers of tests/fuzz/data/ (byte-level BPE and
SentencePiece-style tokenizer.json, a tekken.json), a few tokens each. The fuzz targets load
them as fixed tokenizers and their corpora start from them. Run from anywhere; output is
deterministic."""
import base64, json, os

here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")

def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b); cs.append(256 + n); n += 1
    return dict(zip(bs, [chr(c) for c in cs]))

def write(name, obj):
    with open(os.path.join(here, name), "w") as f:
        json.dump(obj, f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")

b2u = bytes_to_unicode()
vocab = {b2u[b]: b for b in range(256)}
merges = [("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("a", "b"), ("Ġ", "a")]
for a, b in merges:
    vocab[a + b] = len(vocab)
specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|begin_of_text|>", "<|start_header_id|>",
            "<|end_header_id|>", "<|eot_id|>"]
added = []
for s in specials:
    added.append({"id": len(vocab), "content": s, "single_word": False, "lstrip": False, "rstrip": False,
                  "normalized": False, "special": True})
    vocab[s] = len(vocab)
write("tok_bytelevel.json", {
    "version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
    "normalizer": None,
    "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": "'s|'t| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+"},
         "behavior": "Isolated", "invert": False},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]},
    "post_processor": {"type": "TemplateProcessing",
                       "single": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}},
                                  {"Sequence": {"id": "A", "type_id": 0}}],
                       "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
                       "special_tokens": {"<|begin_of_text|>": {"id": "<|begin_of_text|>",
                                                                "ids": [vocab["<|begin_of_text|>"]],
                                                                "tokens": ["<|begin_of_text|>"]}}},
    "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
    "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
              "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
              "vocab": vocab, "merges": [a + " " + b for a, b in merges]}})

vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
for b in range(256):
    vocab["<0x%02X>" % b] = len(vocab)
pieces = ["▁", "a", "b", "t", "h", "e", "▁t", "he", "▁the", "ab", "[INST]", "[/INST]"]
for p in pieces:
    vocab[p] = len(vocab)
merges = [("▁", "t"), ("h", "e"), ("▁t", "he"), ("a", "b")]
added = [{"id": i, "content": s, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False,
          "special": True} for i, s in enumerate(["<unk>", "<s>", "</s>"])]
added += [{"id": vocab[s], "content": s, "single_word": False, "lstrip": False, "rstrip": False,
           "normalized": False, "special": True} for s in ["[INST]", "[/INST]"]]
write("tok_spm.json", {
    "version": "1.0", "added_tokens": added,
    "normalizer": {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "▁"},
                                                        {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]},
    "pre_tokenizer": None,
    "post_processor": {"type": "TemplateProcessing",
                       "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                       "pair": [{"Sequence": {"id": "A", "type_id": 0}}],
                       "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}},
    "decoder": {"type": "Sequence", "decoders": [{"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
                                                  {"type": "ByteFallback"}, {"type": "Fuse"},
                                                  {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
    "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>", "continuing_subword_prefix": None,
              "end_of_word_suffix": None, "fuse_unk": True, "byte_fallback": True, "ignore_merges": False,
              "vocab": vocab, "merges": [a + " " + b for a, b in merges]}})

# tekken: ranks 0..255 are the bytes, then a few merges; 20 default special tokens (no list)
toks = [bytes([b]) for b in range(256)] + [b" t", b"he", b" the", b"ab", b" a"]
write("tekken.json", {
    "config": {"pattern": "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+|[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
               "default_vocab_size": len(toks) + 20, "default_num_special_tokens": 20, "version": "v7"},
    "vocab": [{"rank": i, "token_bytes": base64.b64encode(t).decode(), "token_str": None} for i, t in enumerate(toks)]})

# ---- seed corpora (tests/fuzz/corpus/<target>/): a few small valid inputs each -------------
import struct
corpus = os.path.join(os.path.dirname(here), "corpus")

def seed(target, name, data):
    d = os.path.join(corpus, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)

def st(tensors, meta=None):
    hdr, blob = {}, b""
    if meta:
        hdr["__metadata__"] = meta
    for name, dt, shape, payload in tensors:
        hdr[name] = {"dtype": dt, "shape": shape, "data_offsets": [len(blob), len(blob) + len(payload)]}
        blob += payload
    h = json.dumps(hdr).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + blob

seed("fuzz_safetensors", "one_f32", st([("w", "F32", [2, 2], bytes(16))]))
seed("fuzz_safetensors", "three", st([("a", "BF16", [3], bytes(6)), ("b", "F16", [1, 2], bytes(4)),
                                      ("c", "F32", [], bytes(4))], {"format": "pt"}))
seed("fuzz_safetensors", "empty", st([]))

def gguf(kvs, tensors, version=3, align=32):
    def s(x):
        x = x.encode()
        return struct.pack("<Q", len(x)) + x
    out = b"GGUF" + struct.pack("<IQQ", version, len(tensors), len(kvs))
    for k, t, v in kvs:
        out += s(k) + struct.pack("<I", t)
        if t == 8:
            out += s(v)
        elif t == 4:
            out += struct.pack("<I", v)
        elif t == 6:
            out += struct.pack("<f", v)
        elif t == 7:
            out += struct.pack("<B", v)
        elif t == 9:
            et, items = v
            out += struct.pack("<IQ", et, len(items))
            for it in items:
                out += s(it) if et == 8 else struct.pack("<f", it) if et == 6 else struct.pack("<i", it)
    off = 0
    for name, ggml_type, ne, nbytes in tensors:
        out += s(name) + struct.pack("<I", len(ne)) + b"".join(struct.pack("<Q", n) for n in ne)
        out += struct.pack("<IQ", ggml_type, off)
        off += (nbytes + align - 1) // align * align
    out += bytes(-len(out) % align)
    return out + bytes(off)

toks = ["<unk>", "<s>", "</s>", "\u2581", "a", "b", "\u2581a", "<0x0A>"]
seed("fuzz_gguf", "llama_vocab", gguf([
    ("general.architecture", 8, "llama"), ("general.alignment", 4, 32),
    ("llama.embedding_length", 4, 8), ("llama.block_count", 4, 1), ("llama.feed_forward_length", 4, 16),
    ("llama.attention.head_count", 4, 2), ("llama.attention.head_count_kv", 4, 1), ("llama.context_length", 4, 64),
    ("llama.attention.layer_norm_rms_epsilon", 6, 1e-5), ("llama.rope.freq_base", 6, 10000.0),
    ("tokenizer.ggml.model", 8, "llama"), ("tokenizer.ggml.tokens", 9, (8, toks)),
    ("tokenizer.ggml.scores", 9, (6, [0.0] * 3 + [-1.0, -2.0, -3.0, -1.5, 0.0])),
    ("tokenizer.ggml.token_type", 9, (5, [2, 3, 3, 1, 1, 1, 1, 6])),
    ("tokenizer.ggml.bos_token_id", 4, 1), ("tokenizer.ggml.eos_token_id", 4, 2),
    ("tokenizer.ggml.add_bos_token", 7, 1), ("tokenizer.chat_template", 8, "{% for m in messages %}{% endfor %}")],
    [("token_embd.weight", 0, [8, 8], 256), ("output_norm.weight", 0, [8], 32)]))
seed("fuzz_gguf", "gpt2_vocab", gguf([
    ("general.architecture", 8, "llama"), ("tokenizer.ggml.model", 8, "gpt2"),
    ("tokenizer.ggml.pre", 8, "smollm"), ("tokenizer.ggml.tokens", 9, (8, ["a", "b", "ab", "\u0120", "<|im_end|>"])),
    ("tokenizer.ggml.merges", 9, (8, ["a b"])), ("tokenizer.ggml.token_type", 9, (5, [1, 1, 1, 1, 3]))], [], version=2))
seed("fuzz_gguf", "header_only", gguf([], []))

cfg = {"architectures": ["MistralForCausalLM"], "model_type": "mistral", "hidden_size": 8, "intermediate_size": 16,
       "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 4, "num_hidden_layers": 1, "vocab_size": 4,
       "rms_norm_eps": 1e-5, "max_position_embeddings": 64, "rope_theta": 10000.0, "hidden_act": "silu",
       "tie_word_embeddings": False, "bos_token_id": 1, "eos_token_id": [2, 3], "torch_dtype": "bfloat16"}
seed("fuzz_hf_config", "mistral", json.dumps(cfg))
seed("fuzz_hf_config", "mistral_gen", json.dumps(cfg) + "\n" + json.dumps({"eos_token_id": 2, "temperature": 0.7}))
cfg2 = dict(cfg, architectures=["LlamaForCausalLM"], model_type="llama", tie_word_embeddings=True,
            rope_scaling={"rope_type": "llama3", "factor": 8.0}, torch_dtype="float16")
seed("fuzz_hf_config", "llama_rope", json.dumps(cfg2))
seed("fuzz_hf_config", "qwen_sliding", json.dumps(dict(cfg, architectures=["Qwen2ForCausalLM"], sliding_window=32,
                                                      attention_bias=True, rope_parameters={"rope_theta": 1e6})))

seed("fuzz_params_json", "tiny", json.dumps({"dim": 8, "n_layers": 1, "head_dim": 4, "hidden_dim": 16, "n_heads": 2,
                                             "n_kv_heads": 1, "norm_eps": 1e-5, "vocab_size": 4, "rope_theta": 1e6}))
seed("fuzz_params_json", "devstral_like", json.dumps({"dim": 5120, "n_layers": 40, "head_dim": 128, "hidden_dim": 32768,
                                                      "n_heads": 32, "n_kv_heads": 8, "norm_eps": 1e-5,
                                                      "vocab_size": 131072, "rope_theta": 1e9, "max_seq_len": 131072}))

seed("fuzz_shard_index", "two_shards", json.dumps({"metadata": {"total_size": 32},
     "weight_map": {"model.norm.weight": "a.safetensors", "lm_head.weight": "b.safetensors"}}))
seed("fuzz_shard_index", "missing", json.dumps({"weight_map": {"x": "a.safetensors", "y": "nope.safetensors"}}))
seed("fuzz_shard_index", "bad_names", json.dumps({"weight_map": {"x": "../a.safetensors", "y": "config.json"}}))

for name in ["tok_bytelevel.json", "tok_spm.json"]:
    with open(os.path.join(here, name), "rb") as f:
        data = f.read()
    seed("fuzz_tokenizer_json", name.replace(".json", "_raw"), b"\x01" + data)
    seed("fuzz_tokenizer_json", name.replace(".json", "_cfg"), b"\x02" + data)
with open(os.path.join(here, "tekken.json"), "rb") as f:
    seed("fuzz_tekken", "v7", f.read())
tk = json.load(open(os.path.join(here, "tekken.json")))
tk["config"]["version"] = "v3"
tk["special_tokens"] = [{"rank": i, "token_str": s, "is_control": True} for i, s in
                        enumerate(["<unk>", "<s>", "</s>", "[INST]", "[/INST]"])]
tk["config"]["default_num_special_tokens"] = 5
tk["config"]["default_vocab_size"] = len(tk["vocab"]) + 5
seed("fuzz_tekken", "v3_listed_specials", json.dumps(tk))

for i, text in enumerate(["Hello world, the ab!\n", "caf\u00e9 \u2581 <s>[INST]</s> 12345", "\t\t  x  \n\n"]):
    for tok in range(3):
        seed("fuzz_tokenize", "t%d_%d" % (tok, i), bytes([tok | (i << 2)]) + text.encode())
seed("fuzz_tokenize", "invalid_utf8", b"\x12\xff\xfe\xc3\x28\xe2\x82\xf0\x9f\x98")

def chat(flags, *fields):
    return bytes([flags]) + b"\0".join(f.encode() for f in fields)
seed("fuzz_chat", "v7_user", chat(2 | (1 << 2) | 32, "\x00", "be brief", "", "\x01", "Hello [INST] </s>", ""))
seed("fuzz_chat", "chatml_tools", chat(0 | (3 << 2) | 64 | 32,
     '[{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}]',
     "\x01", "hi", "", "\x02", "", '[{"id":"abcdefghi","type":"function","function":{"name":"f","arguments":"{}"}}]',
     "\x03", "42", "abcdefghi"))
seed("fuzz_chat", "llama3", chat(0 | (4 << 2), "\x00", "sys", "", "\x01", "q", "", "\x02", "a", ""))
seed("fuzz_chat", "v3_tool_calls", chat(2 | (2 << 2) | 64, '[{"type":"function","function":{"name":"g"}}]',
     "\x01", "x", "", "\x02", '[TOOL_CALLS][{"name":"g","arguments":{"a":1}}]', ""))

seed("fuzz_openai", "completion", b"\x02" + json.dumps({"model": "kiln", "prompt": "Hello", "max_tokens": 8,
     "temperature": 0.5, "top_p": 0.9, "stop": ["\n"], "logprobs": 2, "logit_bias": {"5": -100}, "seed": 1}).encode())
seed("fuzz_openai", "completion_ids", b"\x00" + json.dumps({"prompt": [1, 2, 3], "stream": True,
     "stream_options": {"include_usage": True}, "n": 1, "stop_token_ids": [2], "min_tokens": 1}).encode())
seed("fuzz_openai", "chat", b"\x01" + json.dumps({"messages": [{"role": "system", "content": "s"},
     {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
     {"role": "assistant", "content": None, "tool_calls": [{"id": "abcdefghi", "type": "function",
      "function": {"name": "f", "arguments": "{}"}}]}, {"role": "tool", "tool_call_id": "abcdefghi", "content": "1"}],
     "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
     "tool_choice": "auto", "logprobs": True, "top_logprobs": 2, "max_completion_tokens": 4}).encode())
seed("fuzz_openai", "bad", b"\x01{\"messages\": 3, \"temperature\": -1}")

seed("fuzz_sse", "completion", b"\x10" + json.dumps({"prompt": "x", "logprobs": 2, "echo": False}).encode() + b"\0Hello \xff world")
seed("fuzz_sse", "chat_first", b"\x13" + json.dumps({"messages": [{"role": "user", "content": "x"}], "logprobs": True,
     "top_logprobs": 2, "stream": True}).encode() + b"\0caf\xc3\xa9 \xe2\x82")
seed("fuzz_sse", "chat_tools", b"\x35" + json.dumps({"messages": [{"role": "user", "content": "x"}]}).encode() +
     b'\0ok[TOOL_CALLS][{"name":"f","arguments":{"x":"\\u00ff"}}]')
