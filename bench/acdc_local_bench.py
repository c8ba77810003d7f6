#!/usr/bin/python3
"""One ACDC iteration's evaluations on 1 worker vs on `--local 2`, GPT-2-small dims (random
weights, `lensgrid init --preset gpt2`), 16 prompts x 16 tokens. A threshold above every
possible increase removes all 157 edges into the logits in the first iteration, after which every
node reaches nothing and ACDC stops: the run is exactly one acdc-step job (158 edge-patched
forwards of the batch: the circuit and each candidate) plus the circuit-faithfulness job. Also
the same in one process. Numbers, not pass/fail; each line is the client's own wall time.

usage: acdc_local_bench.py BUILD_DIR
"""
import os
import re
import subprocess
import sys
import tempfile
import time

BUILD = sys.argv[1] if len(sys.argv) > 1 else "build"
LENSGRID = os.path.join(BUILD, "client", "lensgrid")


def run(model, where):
    start = time.monotonic()
    proc = subprocess.run([LENSGRID, "search", "--model", model, *where, "--dataset", "induction",
                           "--n-prompts", "16", "--seq-len", "8", "--method", "acdc",
                           "--threshold", "1e9", "--components-per-shard", "20"],
                          capture_output=True, text=True)
    wall = time.monotonic() - start
    if proc.returncode != 0:
        sys.exit(f"acdc_local_bench: {' '.join(where)} failed:\n{proc.stderr}")
    steps = re.search(r"(\d+) evaluations in (\d+) steps", proc.stdout)
    return wall, steps.group(1), steps.group(2)


def main():
    env_core = os.environ.get("OPENBLAS_CORETYPE", "(unset)")
    with tempfile.TemporaryDirectory() as tmp:
        model = os.path.join(tmp, "gpt2-random")
        subprocess.run([LENSGRID, "init", "--out", model, "--preset", "gpt2", "--seed", "0"],
                       check=True, capture_output=True)
        print(f"acdc_local_bench: one ACDC iteration (158 edge-patched forwards, 16 x 16), "
              f"GPT-2-small dims, OPENBLAS_CORETYPE={env_core}")
        rows = [("in process (2 threads)", ["--in-process"]),
                ("--local 1 (1 worker, 2 threads)", ["--local", "1"]),
                ("--local 2 (2 workers, 1 thread each)", ["--local", "2"])]
        results = []
        for name, where in rows:
            wall, evaluations, steps = run(model, where)
            results.append(wall)
            print(f"  {name:40s} {wall:8.2f} s   ({evaluations} evaluations in {steps} step)")
        print(f"  --local 2 vs --local 1: {results[1] / results[2]:.2f}x faster; "
              f"vs in process: {results[0] / results[2]:.2f}x")


if __name__ == "__main__":
    main()
