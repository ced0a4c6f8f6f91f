"""GGUF export and import of the demonstration model (model.py + bpe.py).

Export writes what kinfer's model loader (inference/model.c) and tokenizer loader
(inference/tokenizer_gguf.c) read:
  general.architecture = "llama", llama.* hyper-parameters, the tokenizer.ggml.* vocabulary
  (model "gpt2", pre "gpt-2", tokens, token_type, merges "a b", BOS/EOS ids, add_bos_token),
  and the tensors under their llama.cpp names: matrices in F16 (ne0 = input dimension),
  norms in F32. There is no output.weight: the output projection is tied to token_embd.

Import (load_gguf) rebuilds the PyTorch module and the tokenizer from such a file, so a
reference computation uses exactly the F16-rounded weights the engine runs.
"""

import numpy as np
import torch

import bpe
import gguf_io
import model as mdl

NAME = "kinfer-demo-risk"


def export_gguf(m, tok, path, extra_kv=()):
    cfg = m.cfg
    kv = [
        ("general.architecture", "llama"),
        ("general.name", NAME),
        ("general.description",
         "kinfer demonstration model: a tiny Llama-architecture model trained on synthetic "
         "portfolio risk commentary. Not a general-purpose LLM."),
        ("general.file_type", 1),  # mostly F16
        ("llama.context_length", cfg.n_ctx),
        ("llama.embedding_length", cfg.n_embd),
        ("llama.block_count", cfg.n_layer),
        ("llama.feed_forward_length", cfg.n_ff),
        ("llama.attention.head_count", cfg.n_head),
        ("llama.attention.head_count_kv", cfg.n_head_kv),
        ("llama.rope.dimension_count", cfg.head_dim),
        ("llama.rope.freq_base", float(cfg.rope_base)),
        ("llama.attention.layer_norm_rms_epsilon", float(cfg.rms_eps)),
        ("llama.vocab_size", tok.n_vocab),
        ("tokenizer.ggml.model", "gpt2"),
        ("tokenizer.ggml.pre", "gpt-2"),
        ("tokenizer.ggml.tokens", gguf_io.arr(gguf_io.T_STR, tok.tokens)),
        ("tokenizer.ggml.token_type", gguf_io.arr(gguf_io.T_I32, tok.token_types())),
        ("tokenizer.ggml.merges", gguf_io.arr(gguf_io.T_STR, ["%s %s" % m_ for m_ in tok.merges])),
        ("tokenizer.ggml.bos_token_id", tok.bos),
        ("tokenizer.ggml.eos_token_id", tok.eos),
        ("tokenizer.ggml.add_bos_token", True),
        ("tokenizer.ggml.add_eos_token", False),
    ] + list(extra_kv)
    names = mdl.gguf_names(cfg)
    sd = m.state_dict()
    order = ["tok_embd.weight"]
    for il in range(cfg.n_layer):
        for k in ("attn_norm", "wq", "wk", "wv", "wo", "ffn_norm", "w_gate", "w_up", "w_down"):
            order.append("layers.%d.%s.weight" % (il, k))
    order.append("output_norm.weight")
    tensors = []
    for k in order:
        a = sd[k].detach().float().numpy()
        # Norm vectors stay F32 (kinfer requires it); matrices go to F16.
        tensors.append((names[k], a if a.ndim == 1 else a.astype(np.float16)))
    gguf_io.write(path, kv, tensors)


def load_gguf(path):
    """(model in eval mode with float32 weights, bpe.Tokenizer, gguf_io.Reader)."""
    r = gguf_io.Reader(path)
    kv = r.kv
    if kv.get("general.architecture") != "llama":
        raise ValueError("%s: not a llama model" % path)
    cfg = mdl.Config(
        n_vocab=len(kv["tokenizer.ggml.tokens"]),
        n_embd=kv["llama.embedding_length"],
        n_layer=kv["llama.block_count"],
        n_head=kv["llama.attention.head_count"],
        n_head_kv=kv.get("llama.attention.head_count_kv", kv["llama.attention.head_count"]),
        n_ff=kv["llama.feed_forward_length"],
        n_ctx=kv["llama.context_length"],
        rope_base=kv.get("llama.rope.freq_base", 10000.0),
        rms_eps=kv["llama.attention.layer_norm_rms_epsilon"],
    )
    m = mdl.LlamaDemo(cfg)
    names = mdl.gguf_names(cfg)
    sd = {}
    for k, g in names.items():
        if g not in r.tensors:
            raise ValueError("%s: tensor %s missing" % (path, g))
        sd[k] = torch.from_numpy(np.array(r.tensors[g], dtype=np.float32))
    if "output.weight" in r.tensors:
        raise ValueError("%s: untied output.weight is not supported by this loader" % path)
    m.load_state_dict(sd)
    m.eval()
    merges = [tuple(s.split(" ", 1)) for s in kv["tokenizer.ggml.merges"]]
    tok = bpe.Tokenizer(merges)
    if tok.tokens != kv["tokenizer.ggml.tokens"]:
        raise ValueError("%s: vocabulary does not match its merges" % path)
    return m, tok, r
