"""The demonstration model: a small Llama-architecture decoder in PyTorch, written in kinfer's
own conventions so its weights go into GGUF unchanged (no Q/K permutation):

  - RMSNorm: x * rsqrt(mean(x^2) + eps) * weight;
  - RoPE "normal" ordering, as kinfer's llama path: ADJACENT pairs (x[2i], x[2i+1]) rotate by
    pos * base^(-2i/head_dim): (a, b) -> (a cos - b sin, a sin + b cos);
  - grouped-query attention, query head h reading kv head h // (n_head // n_head_kv), scale
    1/sqrt(head_dim), causal;
  - FFN down(silu(gate(x)) * up(x));
  - output projection tied to the token embedding (GGUF without output.weight).

nn.Linear stores weight[out][in], which is exactly a ggml tensor of ne0 = in, ne1 = out, so
the export writes .weight tensors as they are.
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class Config:
    def __init__(self, n_vocab=2048, n_embd=256, n_layer=4, n_head=8, n_head_kv=4, n_ff=688,
                 n_ctx=512, rope_base=10000.0, rms_eps=1e-5):
        self.n_vocab = n_vocab
        self.n_embd = n_embd
        self.n_layer = n_layer
        self.n_head = n_head
        self.n_head_kv = n_head_kv
        self.n_ff = n_ff
        self.n_ctx = n_ctx
        self.rope_base = rope_base
        self.rms_eps = rms_eps

    @property
    def head_dim(self):
        return self.n_embd // self.n_head

    def to_dict(self):
        return dict(self.__dict__)


class RMSNorm(nn.Module):
    def __init__(self, n, eps):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(n))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rope_tables(cfg, n_pos, dtype=torch.float32):
    """cos/sin [n_pos, head_dim/2], computed in float64 like kinfer (angle in double)."""
    d = cfg.head_dim
    i = torch.arange(d // 2, dtype=torch.float64)
    # kinfer rounds the frequency to float before multiplying by the position.
    inv = torch.pow(torch.tensor(cfg.rope_base, dtype=torch.float64), -2.0 * i / d).float().double()
    ang = torch.arange(n_pos, dtype=torch.float64)[:, None] * inv[None, :]
    return torch.cos(ang).to(dtype), torch.sin(ang).to(dtype)


def apply_rope(x, cos, sin):
    """x [B, T, H, D]; cos/sin [T, D/2]. Adjacent pairs rotate."""
    a = x[..., 0::2]
    b = x[..., 1::2]
    c = cos[None, :, None, :]
    s = sin[None, :, None, :]
    out = torch.stack((a * c - b * s, a * s + b * c), dim=-1)
    return out.flatten(-2)


class Block(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        e, hd = cfg.n_embd, cfg.head_dim
        self.cfg = cfg
        self.attn_norm = RMSNorm(e, cfg.rms_eps)
        self.wq = nn.Linear(e, cfg.n_head * hd, bias=False)
        self.wk = nn.Linear(e, cfg.n_head_kv * hd, bias=False)
        self.wv = nn.Linear(e, cfg.n_head_kv * hd, bias=False)
        self.wo = nn.Linear(cfg.n_head * hd, e, bias=False)
        self.ffn_norm = RMSNorm(e, cfg.rms_eps)
        self.w_gate = nn.Linear(e, cfg.n_ff, bias=False)
        self.w_up = nn.Linear(e, cfg.n_ff, bias=False)
        self.w_down = nn.Linear(cfg.n_ff, e, bias=False)

    def forward(self, x, cos, sin, mask, cache=None):
        """x [B, T, E] at positions p0 .. p0+T-1 where p0 = tokens already in `cache` (a dict
        holding this layer's k/v, grown in place; None when not decoding incrementally)."""
        cfg = self.cfg
        B, T, _ = x.shape
        hd = cfg.head_dim
        h = self.attn_norm(x)
        q = apply_rope(self.wq(h).view(B, T, cfg.n_head, hd), cos, sin)
        k = apply_rope(self.wk(h).view(B, T, cfg.n_head_kv, hd), cos, sin)
        v = self.wv(h).view(B, T, cfg.n_head_kv, hd)
        if cache is not None:
            if "k" in cache:
                k = torch.cat((cache["k"], k), dim=1)
                v = torch.cat((cache["v"], v), dim=1)
            cache["k"], cache["v"] = k, v
        S = k.shape[1]
        rep = cfg.n_head // cfg.n_head_kv
        # [B, H, T, D]; kv head j serves query heads j*rep .. j*rep+rep-1.
        q = q.transpose(1, 2)
        k = k.transpose(1, 2).repeat_interleave(rep, dim=1)
        v = v.transpose(1, 2).repeat_interleave(rep, dim=1)
        att = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(hd))
        att = att.masked_fill(mask[S - T:S, :S], float("-inf")).softmax(-1)
        o = (att @ v).transpose(1, 2).reshape(B, T, cfg.n_head * hd)
        x = x + self.wo(o)
        h = self.ffn_norm(x)
        return x + self.w_down(F.silu(self.w_gate(h)) * self.w_up(h))


class LlamaDemo(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.tok_embd = nn.Embedding(cfg.n_vocab, cfg.n_embd)
        self.layers = nn.ModuleList([Block(cfg) for _ in range(cfg.n_layer)])
        self.output_norm = RMSNorm(cfg.n_embd, cfg.rms_eps)
        cos, sin = rope_tables(cfg, cfg.n_ctx)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)
        mask = torch.triu(torch.ones(cfg.n_ctx, cfg.n_ctx, dtype=torch.bool), diagonal=1)
        self.register_buffer("mask", mask, persistent=False)
        self.apply(self._init)
        # GPT-2 style: residual projections start smaller so the stream stays well scaled.
        for blk in self.layers:
            for lin in (blk.wo, blk.w_down):
                nn.init.normal_(lin.weight, std=0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init(m):
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.02)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=0.02)

    def forward(self, ids, caches=None, p0=0):
        """ids [B, T] at positions p0 .. p0+T-1 (<= n_ctx) -> logits [B, T, n_vocab]. caches:
        one dict per layer for incremental decoding (see Block.forward), or None."""
        T = ids.shape[1]
        x = self.tok_embd(ids)
        cos, sin = self.cos[p0:p0 + T].to(x.dtype), self.sin[p0:p0 + T].to(x.dtype)
        for il, blk in enumerate(self.layers):
            x = blk(x, cos, sin, self.mask, None if caches is None else caches[il])
        return self.output_norm(x) @ self.tok_embd.weight.t()

    def n_params(self):
        return sum(p.numel() for p in self.parameters())

    @torch.no_grad()
    def greedy(self, ids, n_new, eos=None):
        """Greedy continuation of one prompt: the prompt in one pass, then one token at a time
        against a K/V cache (as the engine does). Stops after n_new tokens, at `eos`
        (included) or at n_ctx. Returns (new ids, top-1 minus top-2 logit margin per step)."""
        out, margins = [], []
        caches = [dict() for _ in self.layers]
        logits = self(torch.tensor([list(ids)]), caches, 0)[0, -1]
        pos = len(ids)
        for _ in range(n_new):
            top = torch.topk(logits, 2)
            nxt = int(top.indices[0])
            margins.append(float(top.values[0] - top.values[1]))
            out.append(nxt)
            if (eos is not None and nxt == eos) or pos >= self.cfg.n_ctx:
                break
            logits = self(torch.tensor([[nxt]]), caches, pos)[0, -1]
            pos += 1
        return out, margins


# Tensor names in GGUF (kinfer / llama.cpp) for each state_dict entry.
def gguf_names(cfg):
    names = {"tok_embd.weight": "token_embd.weight", "output_norm.weight": "output_norm.weight"}
    per = {"attn_norm.weight": "attn_norm.weight", "wq.weight": "attn_q.weight",
           "wk.weight": "attn_k.weight", "wv.weight": "attn_v.weight",
           "wo.weight": "attn_output.weight", "ffn_norm.weight": "ffn_norm.weight",
           "w_gate.weight": "ffn_gate.weight", "w_up.weight": "ffn_up.weight",
           "w_down.weight": "ffn_down.weight"}
    for il in range(cfg.n_layer):
        for k, v in per.items():
            names["layers.%d.%s" % (il, k)] = "blk.%d.%s" % (il, v)
    return names
