#!/usr/bin/python3
"""Checks kinfer's demonstration model against PyTorch, token for token.

    demo_model_check.py --driver build/tests/demo_model_driver \
        --model models/kinfer-demo-risk.gguf --golden tests/fixtures/demo_model/greedy.json

Always: runs kinfer's engine (demo_model_driver --dump) on every prompt of the golden file and
requires kinfer's prompt token ids and greedy continuation to equal the stored ones.

When this Python can import torch and numpy ("live" mode) it also rebuilds the PyTorch model
from the GGUF file (tools/demo-model/gguf_model.py), re-tokenizes every prompt with the Python
BPE and recomputes the greedy continuation, and requires both to equal the golden file and
kinfer's output: so neither the model file nor the golden file can drift without this test
failing. Otherwise ("golden-only" mode) it says why. The mode is printed either way.
Exit status: 0 pass, 1 mismatch, 2 bad input.
"""

import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
TOOLS = os.path.join(ROOT, "tools", "demo-model")


def first_diff(a, b):
    i = 0
    while i < len(a) and i < len(b) and a[i] == b[i]:
        i += 1
    return i


def compare(label, want, got, errors):
    if want == got:
        return True
    i = first_diff(want, got)
    errors.append("%s: differ at index %d (expected %d ids, got %d): expected %s ... got %s ..." % (
        label, i, len(want), len(got), want[i:i + 12], got[i:i + 12]))
    return False


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--driver", required=True)
    ap.add_argument("--model", default=os.path.join(ROOT, "models", "kinfer-demo-risk.gguf"))
    ap.add_argument("--golden", default=os.path.join(ROOT, "tests", "fixtures", "demo_model", "greedy.json"))
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    try:
        with open(args.golden) as f:
            golden = json.load(f)
        cases = golden["cases"]
        n_predict = int(golden["n_predict"])
    except (OSError, ValueError, KeyError) as e:
        print("bad golden file %s: %s" % (args.golden, e))
        return 2
    if not cases:
        print("golden file has no cases")
        return 2

    # kinfer.
    run = subprocess.run([args.driver, "--model", args.model, "--golden", args.golden, "--dump",
                          "--threads", str(args.threads)], capture_output=True, text=True)
    if run.returncode != 0:
        print("demo_model_driver failed (%d):\n%s" % (run.returncode, run.stderr))
        return 1
    kinfer = json.loads(run.stdout)["cases"]
    if len(kinfer) != len(cases):
        print("driver returned %d cases for %d prompts" % (len(kinfer), len(cases)))
        return 1

    errors = []
    for i, (g, k) in enumerate(zip(cases, kinfer)):
        compare("case %d prompt ids, kinfer vs golden" % i, g["prompt_ids"], k["prompt_ids"], errors)
        compare("case %d greedy ids, kinfer vs golden" % i, g["ids"], k["ids"], errors)

    # PyTorch, live, when available.
    try:
        import numpy  # noqa: F401
        import torch
        mode = "live"
    except ImportError as e:
        mode = "golden-only"
        why = str(e)
    if mode == "live":
        print("mode: live (PyTorch %s recomputes the greedy continuations from %s)" % (
            torch.__version__, os.path.relpath(args.model, ROOT)))
        sys.path.insert(0, TOOLS)
        import gguf_model

        torch.set_num_threads(args.threads)
        m, tok, _ = gguf_model.load_gguf(args.model)
        for i, (g, k) in enumerate(zip(cases, kinfer)):
            pids = tok.encode(g["prompt"])
            compare("case %d prompt ids, Python BPE vs golden" % i, g["prompt_ids"], pids, errors)
            ids, margins = m.greedy(pids, n_predict, eos=tok.eos)
            compare("case %d greedy ids, PyTorch live vs golden" % i, g["ids"], ids, errors)
            compare("case %d greedy ids, PyTorch live vs kinfer" % i, ids, k["ids"], errors)
            print("case %d: %d prompt tokens, %d generated, min top-2 margin %.3f" % (
                i, len(pids), len(ids), min(margins)))
    else:
        print("mode: golden-only (this Python cannot import torch/numpy: %s); kinfer is compared "
              "with the stored PyTorch continuations only" % why)

    for i, k in enumerate(kinfer):
        print("case %d kinfer text: %s" % (i, k["text"].replace("\n", "\\n")))
    if errors:
        print("FAILED:\n  " + "\n  ".join(errors))
        return 1
    print("PASS: %d prompts, tokenization and greedy continuations equal (%s mode)" % (len(cases), mode))
    return 0


if __name__ == "__main__":
    sys.exit(main())
