#!/usr/bin/python3
"""Trains kinfer's demonstration model (models/kinfer-demo-risk.gguf) from scratch on the CPU.

    /usr/bin/python3 tools/demo-model/train.py            # phase 1: 300 steps
    cp build-demomodel/demo-train/ckpt.pt build-demomodel/demo-train/ckpt-phase1.pt
    /usr/bin/python3 tools/demo-model/train.py --resume build-demomodel/demo-train/ckpt-phase1.pt \
        --steps 300 --warmup 10 --lr 2e-3                 # phase 2 (appends to the log)
    /usr/bin/python3 tools/demo-model/export.py           # GGUF + golden test file

Steps: generate the synthetic corpus (corpus.py, seeded), train the byte-level BPE on part of
it (bpe.py), then train the Llama-architecture model (model.py) with AdamW on next-token
prediction over the whole sequence (BOS, metrics line, "Commentary:", narrative, EOS). The
loss curve goes to stdout and to --log (tools/demo-model/training-log.txt is the committed
copy); the checkpoint goes to --work (a build directory, not committed).

Needs Debian's python3-torch (1.13, CPU). Debian links torch against the reference BLAS,
which is ~20x slower than OpenBLAS; when libopenblas0-pthread is installed this script
re-executes itself with OpenBLAS first on LD_LIBRARY_PATH (no system-wide change needed).
"""

import argparse
import json
import math
import os
import random
import sys
import time

OPENBLAS_DIR = "/usr/lib/x86_64-linux-gnu/openblas-pthread"


def _maybe_reexec_with_openblas(threads):
    if os.environ.get("KF_DEMO_BLAS") or not os.path.exists(OPENBLAS_DIR + "/libblas.so.3"):
        return
    env = dict(os.environ)
    env["KF_DEMO_BLAS"] = "openblas"
    env["LD_LIBRARY_PATH"] = OPENBLAS_DIR + (":" + env["LD_LIBRARY_PATH"] if env.get("LD_LIBRARY_PATH") else "")
    env["OPENBLAS_NUM_THREADS"] = str(threads)
    env["OMP_NUM_THREADS"] = str(threads)
    os.execve(sys.executable, [sys.executable] + sys.argv, env)


HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=20261030)
    ap.add_argument("--examples", type=int, default=30000, help="corpus size")
    ap.add_argument("--bpe-examples", type=int, default=5000, help="examples the BPE learns from")
    ap.add_argument("--vocab", type=int, default=2048)
    ap.add_argument("--embd", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--ff", type=int, default=688)
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--work", default=os.path.join(ROOT, "build-demomodel", "demo-train"))
    ap.add_argument("--log", default=os.path.join(HERE, "training-log.txt"))
    ap.add_argument("--resume", default=None,
                    help="continue from this checkpoint (same corpus and tokenizer): a second "
                         "phase of --steps steps with a fresh optimizer and schedule, reading "
                         "the examples that follow the ones already seen; the log is appended")
    return ap.parse_args()


def main():
    args = parse_args()
    _maybe_reexec_with_openblas(args.threads)
    import torch
    import torch.nn.functional as F

    sys.path.insert(0, HERE)
    import bpe
    import corpus
    import model as mdl

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    os.makedirs(args.work, exist_ok=True)
    logf = open(args.log, "a" if args.resume else "w")
    t_start = time.time()

    def log(msg):
        line = "[%7.1fs] %s" % (time.time() - t_start, msg)
        print(line, flush=True)
        logf.write(line + "\n")
        logf.flush()

    log("kinfer demo model training: %s" % " ".join("%s=%s" % kv for kv in sorted(vars(args).items())
                                                      if kv[0] not in ("work", "log")))
    log("torch %s, %d threads, BLAS %s" % (torch.__version__, torch.get_num_threads(),
                                          os.environ.get("KF_DEMO_BLAS", "system default")))

    # 1. Corpus: train examples, and a held-out set drawn from a different seed.
    train_ex = corpus.generate(args.examples, args.seed)
    held_ex = corpus.generate(64, args.seed + 1)
    log("corpus: %d examples, mean %.0f chars; held-out %d" % (
        len(train_ex), sum(len(a) + len(b) for a, b in train_ex) / len(train_ex), len(held_ex)))

    # 2. Tokenizer.
    merges = bpe.train([a + b for a, b in train_ex[:args.bpe_examples]], args.vocab, log=log)
    tok = bpe.Tokenizer(merges)
    log("bpe: %d tokens, %d merges" % (tok.n_vocab, len(merges)))
    with open(os.path.join(args.work, "merges.json"), "w") as f:
        json.dump(merges, f)

    def encode(ex):
        p, c = ex
        ids = tok.encode(p + c) + [tok.eos]
        n_prompt = len(tok.encode(p))
        return ids, n_prompt

    t0 = time.time()
    train_ids = [encode(e) for e in train_ex]
    held_ids = [encode(e) for e in held_ex]
    n_tok = sum(len(i) for i, _ in train_ids)
    log("encoded: %d tokens (%.0f per example, max %d) in %.0fs" % (
        n_tok, n_tok / len(train_ids), max(len(i) for i, _ in train_ids), time.time() - t0))
    for ids, _ in train_ids[:2000]:
        assert tok.decode(ids) == tok.decode(tok.encode(tok.decode(ids), add_bos=False))

    # 3. Model.
    cfg = mdl.Config(n_vocab=tok.n_vocab, n_embd=args.embd, n_layer=args.layers, n_head=args.heads,
                     n_head_kv=args.kv_heads, n_ff=args.ff, n_ctx=args.ctx)
    m = mdl.LlamaDemo(cfg)
    log("model: %s, %d parameters" % (json.dumps(cfg.to_dict()), m.n_params()))
    first = 0
    prev_seconds = 0.0
    if args.resume:
        prev = torch.load(args.resume)
        if [tuple(x) for x in prev["merges"]] != [tuple(x) for x in merges] or prev["cfg"] != cfg.to_dict():
            sys.exit("--resume: %s was trained with another tokenizer or shape" % args.resume)
        m.load_state_dict(prev["state_dict"])
        first = prev.get("examples_seen", prev["args"]["steps"] * prev["args"]["batch"])
        prev_seconds = prev["train_seconds"]
        log("resumed from %s: %d examples already seen, %.1f min of training" % (
            args.resume, first, prev_seconds / 60.0))
    decay = [p for n, p in m.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in m.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95), eps=1e-8)

    def batch_of(items):
        """Right-padded [B, T] inputs and targets; padding and prompt-free targets masked."""
        T = max(len(i) for i, _ in items) - 1
        x = torch.zeros(len(items), T, dtype=torch.long)
        y = torch.full((len(items), T), -100, dtype=torch.long)
        yc = torch.full((len(items), T), -100, dtype=torch.long)
        for b, (ids, n_prompt) in enumerate(items):
            t = torch.tensor(ids)
            x[b, :len(ids) - 1] = t[:-1]
            y[b, :len(ids) - 1] = t[1:]
            # Commentary-only targets: the positions predicting tokens after the prompt.
            yc[b, n_prompt - 1:len(ids) - 1] = t[n_prompt:]
        return x, y, yc

    def evaluate():
        m.eval()
        tot = totc = 0.0
        n = nc = 0
        with torch.no_grad():
            for k in range(0, len(held_ids), 16):
                x, y, yc = batch_of(held_ids[k:k + 16])
                lg = m(x).reshape(-1, cfg.n_vocab)
                tot += F.cross_entropy(lg, y.reshape(-1), ignore_index=-100, reduction="sum").item()
                totc += F.cross_entropy(lg, yc.reshape(-1), ignore_index=-100, reduction="sum").item()
                n += int((y != -100).sum())
                nc += int((yc != -100).sum())
        m.train()
        return tot / n, totc / nc

    rng = random.Random(args.seed)
    order = list(range(len(train_ids)))
    rng.shuffle(order)
    m.train()
    t_train = time.time()
    seen_tok = 0
    run_loss = None
    for step in range(1, args.steps + 1):
        if step <= args.warmup:
            lr = args.lr * step / args.warmup
        else:
            frac = (step - args.warmup) / max(1, args.steps - args.warmup)
            lr = args.lr * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * frac)))
        for g in opt.param_groups:
            g["lr"] = lr
        k = first + (step - 1) * args.batch
        items = [train_ids[order[(k + j) % len(order)]] for j in range(args.batch)]
        x, y, _ = batch_of(items)
        loss = F.cross_entropy(m(x).reshape(-1, cfg.n_vocab), y.reshape(-1), ignore_index=-100)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
        opt.step()
        seen_tok += int((y != -100).sum())
        run_loss = loss.item() if run_loss is None else 0.9 * run_loss + 0.1 * loss.item()
        if step % 10 == 0 or step == 1:
            el = time.time() - t_train
            log("step %4d  loss %.4f  (smoothed %.4f)  lr %.2e  tokens %d  %.0f tok/s" % (
                step, loss.item(), run_loss, lr, seen_tok, seen_tok / el))
        if step % args.eval_every == 0 or step == args.steps:
            ev, evc = evaluate()
            log("eval step %4d  held-out loss %.4f  commentary-only loss %.4f" % (step, ev, evc))
    train_s = time.time() - t_train
    log("training: %d steps, %d examples seen (%.2f epochs), %d tokens, %.1f min" % (
        args.steps, args.steps * args.batch, args.steps * args.batch / len(train_ids), seen_tok,
        train_s / 60.0))

    ckpt = os.path.join(args.work, "ckpt.pt")
    torch.save({"cfg": cfg.to_dict(), "state_dict": m.state_dict(), "merges": merges,
                "seed": args.seed, "args": vars(args), "train_seconds": prev_seconds + train_s,
                "examples_seen": first + args.steps * args.batch}, ckpt)
    log("training time over all phases: %.1f min, %d examples seen" % (
        (prev_seconds + train_s) / 60.0, first + args.steps * args.batch))
    log("checkpoint: %s" % ckpt)

    m.eval()
    for p, c in held_ex[:2]:
        ids = tok.encode(p)
        out, _ = m.greedy(ids, 120, eos=tok.eos)
        log("sample prompt: %s" % p.replace("\n", "\\n"))
        log("sample greedy: %s" % tok.decode(out).replace("\n", "\\n"))
    log("total wall time %.1f min" % ((time.time() - t_start) / 60.0))


if __name__ == "__main__":
    main()
