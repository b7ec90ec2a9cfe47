#!/usr/bin/env python3
"""ref_llama_gguf.py: a numpy reference forward pass for a GGUF llama-architecture model.

Weights are dequantized with the gguf package (gguf.quants.dequantize); the forward is plain
f32 numpy (--f64 for double): RMSNorm, RoPE on adjacent pairs (2i, 2i+1) as llama.cpp does for
the llama architecture (its converter permutes q/k rows to that layout), grouped-query causal
attention, SwiGLU MLP, tied LM head when output.weight is absent.

  python ref_llama_gguf.py --model M.gguf --ids 1,2,3 --out logits.f32   # [T][vocab] f32 LE
  python ref_llama_gguf.py --model M.gguf --chat "What is the capital of France?" --generate 20

--prompt/--chat use a small byte-level BPE built from the GGUF vocab and merges (enough for
plain ASCII prompts; not a full tokenizer) for checking that the reference is plausible.
"""
import argparse
import re
import sys

import numpy as np
import gguf


class Model:
    def __init__(self, path, dtype=np.float32):
        """path: a GGUF file, or a gguf.GGUFReader of one"""
        self.r = r = path if isinstance(path, gguf.GGUFReader) else gguf.GGUFReader(path)
        self.dtype = dtype
        f = r.fields

        def val(key, default=None):
            if key not in f:
                return default
            return f[key].contents()

        arch = val("general.architecture")
        if arch != "llama":
            raise SystemExit(f"{path}: architecture {arch!r} is not llama")
        self.dim = int(val("llama.embedding_length"))
        self.n_layers = int(val("llama.block_count"))
        self.n_heads = int(val("llama.attention.head_count"))
        self.n_kv = int(val("llama.attention.head_count_kv", self.n_heads))
        self.head_dim = int(val("llama.attention.key_length", self.dim // self.n_heads))
        self.theta = float(val("llama.rope.freq_base", 10000.0))
        self.eps = float(val("llama.attention.layer_norm_rms_epsilon", 1e-5))
        scaling = val("llama.rope.scaling.type", "none")
        if scaling not in ("none", None):
            raise SystemExit(f"{path}: rope scaling {scaling!r} not supported")
        self.tokens = val("tokenizer.ggml.tokens")
        self.merges = val("tokenizer.ggml.merges") or []
        self.bos = val("tokenizer.ggml.bos_token_id")
        self.eos = val("tokenizer.ggml.eos_token_id")
        self.t = {t.name: t for t in r.tensors}
        self.cache = {}

    def w(self, name):
        """dequantized tensor, shape outermost-first ([out][in] for linear weights)"""
        if name not in self.cache:
            t = self.t[name]
            a = gguf.quants.dequantize(t.data, t.tensor_type)
            shape = tuple(int(x) for x in reversed(t.shape.tolist()))
            self.cache[name] = np.ascontiguousarray(a.reshape(shape), dtype=self.dtype)
        return self.cache[name]

    def rmsnorm(self, x, w):
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + self.dtype(self.eps)) * w

    def rope(self, x, pos):
        """x: [T][H][hd]; rotate pairs (2i, 2i+1) by pos * theta^(-2i/hd) (angles in f64)"""
        hd = self.head_dim
        inv = self.theta ** (-np.arange(0, hd, 2, dtype=np.float64) / hd)
        ang = pos[:, None].astype(np.float64) * inv[None, :]  # [T][hd/2]
        cos = np.cos(ang).astype(self.dtype)[:, None, :]
        sin = np.sin(ang).astype(self.dtype)[:, None, :]
        x0, x1 = x[..., 0::2], x[..., 1::2]
        out = np.empty_like(x)
        out[..., 0::2] = x0 * cos - x1 * sin
        out[..., 1::2] = x0 * sin + x1 * cos
        return out

    def forward(self, ids):
        """logits [T][vocab] for token ids (positions 0..T-1)"""
        ids = np.asarray(ids, dtype=np.int64)
        T, H, K, hd = len(ids), self.n_heads, self.n_kv, self.head_dim
        pos = np.arange(T)
        x = self.w("token_embd.weight")[ids].astype(self.dtype)  # [T][dim]
        mask = np.triu(np.full((T, T), -np.inf, dtype=self.dtype), k=1)
        for l in range(self.n_layers):
            p = f"blk.{l}."
            h = self.rmsnorm(x, self.w(p + "attn_norm.weight"))
            q = (h @ self.w(p + "attn_q.weight").T).reshape(T, H, hd)
            k = (h @ self.w(p + "attn_k.weight").T).reshape(T, K, hd)
            v = (h @ self.w(p + "attn_v.weight").T).reshape(T, K, hd)
            q, k = self.rope(q, pos), self.rope(k, pos)
            g = H // K
            k = np.repeat(k, g, axis=1)  # [T][H][hd]: head i uses kv head i // g
            v = np.repeat(v, g, axis=1)
            s = np.einsum("thd,shd->hts", q, k) / self.dtype(np.sqrt(hd)) + mask[None]
            s = np.exp(s - s.max(axis=-1, keepdims=True))
            s /= s.sum(axis=-1, keepdims=True)
            o = np.einsum("hts,shd->thd", s, v).reshape(T, H * hd)
            x = x + o @ self.w(p + "attn_output.weight").T
            h = self.rmsnorm(x, self.w(p + "ffn_norm.weight"))
            gt = h @ self.w(p + "ffn_gate.weight").T
            up = h @ self.w(p + "ffn_up.weight").T
            x = x + ((gt / (1 + np.exp(-gt))) * up) @ self.w(p + "ffn_down.weight").T
        x = self.rmsnorm(x, self.w("output_norm.weight"))
        head = self.w("output.weight") if "output.weight" in self.t else self.w("token_embd.weight")
        return (x @ head.T).astype(np.float32)


# ---- a small byte-level BPE (GPT-2 style) from the GGUF vocab, for plausibility checks ----

def _bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\xa1"), ord("\xac") + 1)) + \
        list(range(ord("\xae"), ord("\xff") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


class BPE:
    def __init__(self, m):
        self.vocab = {t: i for i, t in enumerate(m.tokens)}
        self.tokens = m.tokens
        self.ranks = {tuple(mg.split(" ", 1)): i for i, mg in enumerate(m.merges)}
        self.b2u = _bytes_to_unicode()
        self.u2b = {v: k for k, v in self.b2u.items()}
        self.special = [t for t in m.tokens if t.startswith("<|") and t.endswith("|>")]

    def _word(self, w):
        parts = [self.b2u[b] for b in w.encode("utf-8")]
        while len(parts) > 1:
            best = min(((self.ranks.get((a, b), 1 << 30), i) for i, (a, b) in
                        enumerate(zip(parts, parts[1:]))))
            if best[0] == 1 << 30:
                break
            i = best[1]
            parts = parts[:i] + [parts[i] + parts[i + 1]] + parts[i + 2:]
        return [self.vocab[p] for p in parts]

    def encode(self, text):
        ids = []
        pat = "(" + "|".join(re.escape(s) for s in self.special) + ")" if self.special else None
        for chunk in (re.split(pat, text) if pat else [text]):
            if not chunk:
                continue
            if chunk in self.vocab and chunk in self.special:
                ids.append(self.vocab[chunk])
                continue
            for w in re.findall(r"'s|'t|'re|'ve|'m|'ll|'d| ?[A-Za-z]+| ?[0-9]| ?[^\sA-Za-z0-9]+|\s+(?!\S)|\s+",
                                chunk):
                ids += self._word(w)
        return ids

    def decode(self, ids):
        s = "".join(self.tokens[i] for i in ids)
        return bytes(self.u2b.get(c, ord("?")) for c in s).decode("utf-8", "replace")


def chat_prompt(user):
    return ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
            "Face<|im_end|>\n<|im_start|>user\n" + user + "<|im_end|>\n<|im_start|>assistant\n")


def greedy(m, ids, n):
    ids = list(ids)
    out = []
    for _ in range(n):
        nxt = int(np.argmax(m.forward(ids)[-1]))
        out.append(nxt)
        ids.append(nxt)
        if nxt == m.eos:
            break
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--ids", help="comma-separated prompt token ids")
    ap.add_argument("--prompt", help="text prompt (simple BPE, see above)")
    ap.add_argument("--chat", help="user message wrapped in the ChatML template")
    ap.add_argument("--out", help="write logits [T][vocab] f32 here")
    ap.add_argument("--generate", type=int, default=0, help="greedy tokens to print")
    ap.add_argument("--f64", action="store_true", help="compute in float64")
    a = ap.parse_args()
    m = Model(a.model, np.float64 if a.f64 else np.float32)
    bpe = None
    if a.ids:
        ids = [int(x) for x in a.ids.split(",") if x.strip()]
    else:
        bpe = BPE(m)
        ids = bpe.encode(chat_prompt(a.chat) if a.chat else (a.prompt or ""))
    if not ids:
        raise SystemExit("no prompt ids")
    print("ids:", ",".join(map(str, ids)), file=sys.stderr)
    logits = m.forward(ids)
    if not np.isfinite(logits).all():
        raise SystemExit("non-finite logits")
    if a.out:
        logits.astype("<f4").tofile(a.out)
    print("last-position argmax:", int(np.argmax(logits[-1])), repr(m.tokens[int(np.argmax(logits[-1]))]),
          file=sys.stderr)
    if a.generate:
        bpe = bpe or BPE(m)
        g = greedy(m, ids, a.generate)
        print("greedy ids:", ",".join(map(str, g)), file=sys.stderr)
        print(bpe.decode(g))


if __name__ == "__main__":
    main()
