#!/usr/bin/python3
"""Exports the trained demonstration model to GGUF and writes the golden test file.

    /usr/bin/python3 tools/demo-model/export.py \
        [--ckpt build-demomodel/demo-train/ckpt.pt] [--out models/kinfer-demo-risk.gguf] \
        [--golden tests/fixtures/demo_model/greedy.json]

The golden file holds, for each test prompt, the Python BPE's token ids of the prompt and
PyTorch's greedy continuation (ids and text). The continuation is computed from the GGUF just
written (F16 weights read back), not from the float32 checkpoint, so it is what the engine
should reproduce exactly. The smallest top-1/top-2 logit margin along each continuation is
recorded too: a prompt whose continuation passes through a near-tie (< --min-margin) is
replaced by the next candidate, because there float summation order alone could pick either
token and the test would be checking noise.
"""

import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)

import corpus  # noqa: E402


# Prompts the test always includes: the documented example and a bare metrics line (the model
# must write "Commentary:" itself), then held-out generator prompts.
FIXED_PROMPTS = [
    "Portfolio P-001 as of 2026-10-30: value 12.3M USD; 1-day 99% VaR 412,300 (3.35%); "
    "ES 521,900 (4.24%); volatility 14.2%; max drawdown -8.7%; top exposures Technology 31.2%, "
    "Financials 18.4%, Energy 9.1%; VaR limit 3.00%; breaches: 2 (VaR 3.35% > 3.00%; sector "
    "Technology 31.2% > 30.0%); stress rates +200bp -9.8%.\nCommentary:",
    "Portfolio P-042 as of 2026-03-31: value 250.0M EUR; 1-day 99% VaR 2,125,000 (0.85%); "
    "ES 2,600,000 (1.04%); top exposures Government Bonds 38.0%, Utilities 12.5%, "
    "Healthcare 9.0%; VaR limit 2.00%; breaches: none.",
]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", default=os.path.join(ROOT, "build-demomodel", "demo-train", "ckpt.pt"))
    ap.add_argument("--out", default=os.path.join(ROOT, "models", "kinfer-demo-risk.gguf"))
    ap.add_argument("--golden", default=os.path.join(ROOT, "tests", "fixtures", "demo_model", "greedy.json"))
    ap.add_argument("--cases", type=int, default=6)
    ap.add_argument("--n-predict", type=int, default=64)
    ap.add_argument("--min-margin", type=float, default=0.002)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import torch

    import bpe
    import gguf_model
    import model as mdl

    torch.set_num_threads(args.threads)
    ck = torch.load(args.ckpt)
    cfg = mdl.Config(**ck["cfg"])
    m = mdl.LlamaDemo(cfg)
    m.load_state_dict(ck["state_dict"])
    m.eval()
    tok = bpe.Tokenizer(ck["merges"])
    extra = [("kinfer.demo.seed", int(ck["seed"])),
             ("kinfer.demo.train_seconds", float(ck["train_seconds"]))]
    gguf_model.export_gguf(m, tok, args.out, extra)
    print("wrote %s (%d bytes, %d parameters)" % (args.out, os.path.getsize(args.out), m.n_params()))

    # Reference from the file itself.
    m2, tok2, _ = gguf_model.load_gguf(args.out)
    prompts = list(FIXED_PROMPTS)
    # Held-out prompts from a seed the training corpus never used.
    prompts += [p for p, _ in corpus.generate(4 * args.cases, int(ck["seed"]) + 7)]
    cases, rejected = [], 0
    for p in prompts:
        if len(cases) >= args.cases:
            break
        pids = tok2.encode(p)
        ids, margins = m2.greedy(pids, args.n_predict, eos=tok2.eos)
        mm = min(margins)
        if mm < args.min_margin:
            rejected += 1
            print("rejected (near-tie, margin %.4f): %s" % (mm, p[:60]))
            continue
        text = tok2.decode([i for i in ids if i != tok2.eos])
        cases.append({"prompt": p, "prompt_ids": pids, "ids": ids, "text": text,
                      "min_margin": round(mm, 4)})
        print("case %d (margin %.3f): %s\n  -> %s" % (len(cases) - 1, mm, p.replace("\n", "\\n"), text))
    golden = {
        "model": os.path.relpath(args.out, ROOT),
        "note": "written by tools/demo-model/export.py: prompt_ids = Python BPE (BOS first), "
                "ids = PyTorch greedy continuation from the GGUF weights (EOS included when "
                "reached), n_predict tokens at most",
        "n_predict": args.n_predict,
        "min_margin_threshold": args.min_margin,
        "rejected_near_ties": rejected,
        "cases": cases,
    }
    os.makedirs(os.path.dirname(args.golden), exist_ok=True)
    with open(args.golden, "w") as f:
        json.dump(golden, f, indent=1)
        f.write("\n")
    print("wrote %s: %d cases, %d near-tie prompts skipped" % (args.golden, len(cases), rejected))


if __name__ == "__main__":
    main()
