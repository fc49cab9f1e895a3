"""GGUF conversion: plain transformers (config, weights and tokenizer each parse the file) next to laf's shared parse.

`laf` converts the default model's GGUF into a safetensors folder once per machine (the first `make demo`, a fresh CI
cache). transformers reads the GGUF three times (AutoConfig, the weights, the tokenizer) and its `GGUFReader` parses
every metadata field in Python, 262,144 vocabulary entries times three arrays each time. `harness.models.convert`
shares one parse per file within a conversion. Both sides load the same model and tokenizer; the benchmark checks the
weights and the tokenizer are identical and prints CPU seconds (not wall: the machine is shared) side by side.

Each side runs in its own process, one after the other. Usage: python benchmarks/convert_speed.py [--gguf PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TQDM_DISABLE", "1")

CHILD = r"""
import contextlib, hashlib, json, sys, time
sys.path.insert(0, sys.argv[1])
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from harness.models.convert import _one_gguf_parse
import gguf
path, mode = sys.argv[2], sys.argv[3]
made = []
orig = gguf.GGUFReader
def counting(*a, **k):
    made.append(1)
    return orig(*a, **k)
gguf.GGUFReader = counting
folder, name = path.rsplit("/", 1)
c0, t0 = time.process_time(), time.perf_counter()
with (_one_gguf_parse() if mode == "laf" else contextlib.nullcontext()):
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
cpu, wall = time.process_time() - c0, time.perf_counter() - t0
h = hashlib.sha256()
for k, v in sorted(model.state_dict().items()):
    h.update(k.encode()); h.update(v.contiguous().numpy().tobytes())
ids = tok("The Tempo T4 manual: press MODE twice, then hold SET for 3 s.").input_ids
print(json.dumps({"cpu_s": cpu, "wall_s": wall, "readers": len(made), "weights_sha256": h.hexdigest(), "ids": ids, "vocab": len(tok)}))
"""


def run(path: str, mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(REPO), path, mode], capture_output=True, text=True, timeout=1800)
    if out.returncode != 0:
        raise SystemExit(f"{mode} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gguf", help="a GGUF file (default: the default model's, assembled from its package)")
    args = ap.parse_args()
    if args.gguf:
        path = str(Path(args.gguf).resolve())
    else:
        from harness.models.convert import default_gguf

        path = str(default_gguf()[0])
    plain, ours = run(path, "plain"), run(path, "laf")
    same = plain["weights_sha256"] == ours["weights_sha256"] and plain["ids"] == ours["ids"] and plain["vocab"] == ours["vocab"]
    print(f"GGUF: {path}")
    print(f"{'':28}{'transformers':>14}{'laf':>10}{'ratio':>8}")
    print(f"{'GGUF parses':28}{plain['readers']:>14}{ours['readers']:>10}")
    print(f"{'CPU s (config+weights+tok)':28}{plain['cpu_s']:>14.1f}{ours['cpu_s']:>10.1f}{plain['cpu_s'] / ours['cpu_s']:>7.2f}x")
    print(f"{'wall s':28}{plain['wall_s']:>14.1f}{ours['wall_s']:>10.1f}{plain['wall_s'] / ours['wall_s']:>7.2f}x")
    print(f"identical weights and tokenizer: {same}")
    if not same:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
