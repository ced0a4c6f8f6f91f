#!/usr/bin/python3
"""Independent numpy reference for kinfer's llama/qwen2 forward pass.

Written separately from the C engine: its own GGUF parser, its own dequantizers (F32, F16, BF16,
Q8_0, Q4_0) and its own float64 forward pass, following the llama.cpp conventions:
RMSNorm, RoPE with adjacent pairs (llama) or halves (qwen2, "neox"), rope_freqs dividing the
frequencies, grouped-query causal attention, qwen2 q/k/v biases, SwiGLU FFN, tied output.

Usage:
  ref_model.py logits --model M.gguf --out REF.npy TOKEN...     write float64 [T, n_vocab]
  ref_model.py check  --model M.gguf --driver ref_driver [--mode M] [--kv f32|f16]
                      [--n-tokens N] [--seed S] [--tol X]
      runs the C driver on N seeded random token ids, computes the reference, and exits 1
      unless   max|ours - ref| <= tol * std(ref)   for every position, and our argmax at every
      position is a reference near-maximum (ref[argmax_ours] >= max(ref) - tol * std(ref)).

Quantized weights (Q8_0, Q4_0): like llama.cpp, the engine quantizes activations to 8 bits
(blocks of 32, scale max|x|/127, round half to even) before the integer dot product. With
--act-q8 (default for quantized models) the reference applies the same activation rounding so
the comparison stays tight; without it, expect ~1e-1 * std differences on random models.
Likewise with --kv f16 the reference rounds K and V to halves as the engine's cache does: with
8-bit activations any unmirrored perturbation flips roundings and shows up at ~1e-2 * std.
"""
import argparse
import struct
import subprocess
import sys
import tempfile
import os

import numpy as np

# ---------------------------------------------------------------- GGUF parsing

GGUF_SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
               10: "<Q", 11: "<q", 12: "<d"}
T_F32, T_F16, T_Q4_0, T_Q8_0, T_BF16 = 0, 1, 2, 8, 30
BLOCK = {T_F32: (1, 4), T_F16: (1, 2), T_BF16: (1, 2), T_Q8_0: (32, 34), T_Q4_0: (32, 18)}


class Reader:
    def __init__(self, buf):
        self.buf = buf
        self.off = 0

    def take(self, fmt):
        v = struct.unpack_from(fmt, self.buf, self.off)[0]
        self.off += struct.calcsize(fmt)
        return v

    def string(self):
        n = self.take("<Q")
        s = bytes(self.buf[self.off:self.off + n])
        self.off += n
        return s.decode("utf-8", errors="replace")

    def value(self, t):
        if t in GGUF_SCALAR:
            return self.take(GGUF_SCALAR[t])
        if t == 8:
            return self.string()
        if t == 9:
            et = self.take("<I")
            n = self.take("<Q")
            if et in GGUF_SCALAR and et != 7:
                fmt = GGUF_SCALAR[et]
                size = struct.calcsize(fmt)
                arr = np.frombuffer(self.buf, dtype=np.dtype(fmt), count=n, offset=self.off)
                self.off += size * n
                return arr
            return [self.value(et) for _ in range(n)]
        raise ValueError("unknown GGUF value type %d" % t)


def load_gguf(path):
    with open(path, "rb") as f:
        buf = memoryview(f.read())
    r = Reader(buf)
    if bytes(buf[:4]) != b"GGUF":
        raise ValueError("not a GGUF file")
    r.off = 4
    version = r.take("<I")
    if version not in (2, 3):
        raise ValueError("GGUF version %d" % version)
    n_tensors = r.take("<Q")
    n_kv = r.take("<Q")
    meta = {}
    for _ in range(n_kv):
        key = r.string()
        t = r.take("<I")
        meta[key] = r.value(t)
    infos = []
    for _ in range(n_tensors):
        name = r.string()
        nd = r.take("<I")
        ne = [r.take("<Q") for _ in range(nd)]
        t = r.take("<I")
        off = r.take("<Q")
        infos.append((name, ne, t, off))
    align = int(meta.get("general.alignment", 32))
    base = (r.off + align - 1) // align * align
    tensors = {}
    for name, ne, t, off in infos:
        tensors[name] = (ne, t, base + off)
    return meta, tensors, buf


def dequant(buf, ne, t, off):
    """Returns the tensor as float64 with shape (ne[1], ne[0]) (rows of ne[0]) or (ne[0],)."""
    n = 1
    for e in ne:
        n *= e
    if t not in BLOCK:
        raise ValueError("reference does not dequantize type %d" % t)
    bs, bb = BLOCK[t]
    nbytes = n // bs * bb
    raw = np.frombuffer(buf, dtype=np.uint8, count=nbytes, offset=off)
    if t == T_F32:
        v = raw.view("<f4").astype(np.float64)
    elif t == T_F16:
        v = raw.view("<f2").astype(np.float64)
    elif t == T_BF16:
        v = (raw.view("<u2").astype(np.uint32) << 16).view("<f4").astype(np.float64)
    elif t == T_Q8_0:
        blocks = raw.reshape(-1, 34)
        d = blocks[:, :2].copy().view("<f2").astype(np.float64)
        q = blocks[:, 2:].view(np.int8).astype(np.float64)
        v = (d * q).reshape(-1)
    elif t == T_Q4_0:
        blocks = raw.reshape(-1, 18)
        d = blocks[:, :2].copy().view("<f2").astype(np.float64)
        qs = blocks[:, 2:]
        lo = (qs & 0x0F).astype(np.float64) - 8.0
        hi = (qs >> 4).astype(np.float64) - 8.0
        v = (d * np.concatenate([lo, hi], axis=1)).reshape(-1)
    if len(ne) == 1 or all(e == 1 for e in ne[1:]):
        return v.reshape(ne[0]) if len(ne) == 1 else v.reshape(-1, ne[0])
    return v.reshape(-1, ne[0])


# ---------------------------------------------------------------- the model


class Model:
    def __init__(self, path, act_q8=None, kv_f16=False):
        self.meta, self.tensors, self.buf = load_gguf(path)
        m = self.meta
        self.arch = m["general.architecture"]
        if self.arch not in ("llama", "qwen2"):
            raise ValueError("unsupported arch " + self.arch)
        a = self.arch + "."
        self.n_embd = int(m[a + "embedding_length"])
        self.n_layer = int(m[a + "block_count"])
        self.n_head = int(m[a + "attention.head_count"])
        self.n_head_kv = int(m.get(a + "attention.head_count_kv", self.n_head))
        self.eps = float(m[a + "attention.layer_norm_rms_epsilon"])
        self.base = float(m.get(a + "rope.freq_base", 10000.0))
        self.head_dim = self.n_embd // self.n_head
        self.n_rot = int(m.get(a + "rope.dimension_count", self.head_dim))
        self.neox = self.arch == "qwen2"
        scale = 1.0
        if m.get(a + "rope.scaling.type") == "linear":
            scale = 1.0 / float(m[a + "rope.scaling.factor"])
        self.freq_scale = scale
        quantized = self.tensors["blk.0.attn_q.weight"][1] in (T_Q8_0, T_Q4_0)
        self.act_q8 = quantized if act_q8 is None else act_q8
        self.kv_f16 = kv_f16

    def w(self, name):
        ne, t, off = self.tensors[name]
        return dequant(self.buf, ne, t, off)

    def has(self, name):
        return name in self.tensors

    def quantized(self, name):
        return self.tensors[name][1] in (T_Q8_0, T_Q4_0)

    def matmul(self, x, name):
        """x [T, n_in] times weight rows [n_out, n_in] -> [T, n_out]."""
        W = self.w(name)
        if self.act_q8 and self.quantized(name):
            x = q8_round(x)
        return x @ W.T

    def rope(self, x, pos):
        """x [T, H, hd] rotated in place by positions pos [T]."""
        half = self.n_rot // 2
        inv = self.base ** (-np.arange(0, self.n_rot, 2, dtype=np.float64) / self.n_rot)
        inv = inv * self.freq_scale
        if self.has("rope_freqs.weight"):
            inv = inv / self.w("rope_freqs.weight")
        ang = pos[:, None].astype(np.float64) * inv[None, :]  # [T, half]
        c = np.cos(ang)[:, None, :]
        s = np.sin(ang)[:, None, :]
        if self.neox:
            a = x[:, :, :half].copy()
            b = x[:, :, half:self.n_rot].copy()
            x[:, :, :half] = a * c - b * s
            x[:, :, half:self.n_rot] = a * s + b * c
        else:
            a = x[:, :, 0:self.n_rot:2].copy()
            b = x[:, :, 1:self.n_rot:2].copy()
            x[:, :, 0:self.n_rot:2] = a * c - b * s
            x[:, :, 1:self.n_rot:2] = a * s + b * c
        return x

    def rmsnorm(self, x, name):
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + self.eps) * self.w(name)

    def forward(self, ids):
        """Logits [T, n_vocab] for a single sequence of token ids at positions 0..T-1."""
        ids = np.asarray(ids, dtype=np.int64)
        T = len(ids)
        pos = np.arange(T)
        emb = self.w("token_embd.weight")
        x = emb[ids].copy()
        H, KV, hd = self.n_head, self.n_head_kv, self.head_dim
        group = H // KV
        mask = np.triu(np.full((T, T), -np.inf), k=1)
        for il in range(self.n_layer):
            p = "blk.%d." % il
            xn = self.rmsnorm(x, p + "attn_norm.weight")
            q = self.matmul(xn, p + "attn_q.weight")
            k = self.matmul(xn, p + "attn_k.weight")
            v = self.matmul(xn, p + "attn_v.weight")
            if self.has(p + "attn_q.bias"):
                q = q + self.w(p + "attn_q.bias")
                k = k + self.w(p + "attn_k.bias")
                v = v + self.w(p + "attn_v.bias")
            q = self.rope(q.reshape(T, H, hd), pos)
            k = self.rope(k.reshape(T, KV, hd), pos)
            v = v.reshape(T, KV, hd)
            if self.kv_f16:  # the engine stores K (after RoPE) and V as IEEE halves
                k = k.astype(np.float16).astype(np.float64)
                v = v.astype(np.float16).astype(np.float64)
            att = np.empty((T, H, hd))
            for h in range(H):
                kh = h // group
                s = q[:, h, :] @ k[:, kh, :].T / np.sqrt(hd) + mask
                s = np.exp(s - s.max(axis=1, keepdims=True))
                s = s / s.sum(axis=1, keepdims=True)
                att[:, h, :] = s @ v[:, kh, :]
            x = x + self.matmul(att.reshape(T, H * hd), p + "attn_output.weight")
            xn = self.rmsnorm(x, p + "ffn_norm.weight")
            g = self.matmul(xn, p + "ffn_gate.weight")
            u = self.matmul(xn, p + "ffn_up.weight")
            hdn = g / (1.0 + np.exp(-g)) * u
            x = x + self.matmul(hdn, p + "ffn_down.weight")
        xn = self.rmsnorm(x, "output_norm.weight")
        out_name = "output.weight" if self.has("output.weight") else "token_embd.weight"
        return self.matmul(xn, out_name)


def q8_round(x):
    """8-bit activation rounding in blocks of 32 (max|x|/127 scale, round half to even)."""
    x32 = x.astype(np.float32)
    T, n = x32.shape
    b = x32.reshape(T, n // 32, 32)
    amax = np.abs(b).max(axis=2, keepdims=True)
    d = (amax / np.float32(127.0)).astype(np.float32)
    with np.errstate(divide="ignore"):
        inv = np.where(d > 0, np.float32(1.0) / d, np.float32(0.0)).astype(np.float32)
    q = np.clip(np.rint(b * inv), -127, 127)
    return (q.astype(np.float64) * d.astype(np.float64)).reshape(T, n)


# ---------------------------------------------------------------- commands


def cmd_logits(args):
    m = Model(args.model, act_q8=args.act_q8)
    np.save(args.out, m.forward([int(t) for t in args.tokens]))
    return 0


def cmd_check(args):
    m = Model(args.model, act_q8=args.act_q8, kv_f16=args.kv == "f16")
    n_vocab = m.tensors["token_embd.weight"][0][1]
    rng = np.random.RandomState(args.seed)
    ids = rng.randint(0, n_vocab, size=args.n_tokens)
    with tempfile.TemporaryDirectory() as td:
        out = os.path.join(td, "logits.f32")
        cmd = [args.driver, "--model", args.model, "--out", out, "--mode", args.mode,
               "--kv", args.kv, "--block-tokens", str(args.block_tokens)]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        cmd += [str(int(t)) for t in ids]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            print("driver failed (%d): %s" % (res.returncode, res.stderr.strip()))
            return 1
        ours = np.fromfile(out, dtype="<f4").astype(np.float64)
    if ours.size != args.n_tokens * n_vocab:
        print("driver wrote %d floats, expected %d" % (ours.size, args.n_tokens * n_vocab))
        return 1
    ours = ours.reshape(args.n_tokens, n_vocab)
    ref = m.forward(ids)
    std = ref.std()
    worst = 0.0
    ok = True
    for t in range(args.n_tokens):
        diff = np.abs(ours[t] - ref[t]).max() / std
        worst = max(worst, diff)
        am = int(np.argmax(ours[t]))
        near = ref[t, am] >= ref[t].max() - args.tol * std
        if diff > args.tol or not near or not np.isfinite(ours[t]).all():
            print("position %d: max|diff|/std = %.3g (tol %.3g), our argmax %d ref argmax %d"
                  % (t, diff, args.tol, am, int(np.argmax(ref[t]))))
            ok = False
    print("%s %s tokens=%d mode=%s kv=%s act_q8=%s: max|diff|/std(ref)=%.3g (std %.4g), "
          "argmax agree %d/%d -> %s"
          % (m.arch, os.path.basename(args.model), args.n_tokens, args.mode, args.kv, m.act_q8,
             worst, std, int((ours.argmax(1) == ref.argmax(1)).sum()), args.n_tokens,
             "OK" if ok else "FAIL"))
    return 0 if ok else 1


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("logits", "check"):
        p = sub.add_parser(name)
        p.add_argument("--model", required=True)
        p.add_argument("--act-q8", dest="act_q8", action="store_true", default=None)
        p.add_argument("--no-act-q8", dest="act_q8", action="store_false")
        if name == "logits":
            p.add_argument("--out", required=True)
            p.add_argument("tokens", nargs="+")
        else:
            p.add_argument("--driver", required=True)
            p.add_argument("--mode", default="prefill")
            p.add_argument("--kv", default="f32")
            p.add_argument("--block-tokens", type=int, default=4)
            p.add_argument("--threads", type=int, default=0)
            p.add_argument("--n-tokens", type=int, default=7)
            p.add_argument("--seed", type=int, default=1)
            p.add_argument("--tol", type=float, default=1e-3)
    args = ap.parse_args()
    return cmd_logits(args) if args.cmd == "logits" else cmd_check(args)


if __name__ == "__main__":
    sys.exit(main())
