"""`lensgrid tokenize`: flags, output formats, errors, and a 10 MB JSONL corpus in one run
(its time is printed for information; speed targets live in bench/tokenizer_bench).

Run by ctest with --tool (a binary whose main is RunTokenizeCommand) and --bpe-dir (GPT-2's
encoder.json + vocab.bpe). Exits 77 (skipped) when the GPT-2 files are not installed.
"""
import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import unittest

ARGS = None


def run(*flags, stdin=b"", env=None):
    full_env = dict(os.environ)
    full_env.update(env or {})
    proc = subprocess.run([ARGS.tool, *flags], input=stdin, capture_output=True, env=full_env,
                          timeout=120)
    return proc.returncode, proc.stdout.decode("utf-8", "replace"), proc.stderr.decode()


def english_like(n_bytes, seed=0):
    """Deterministic English-like text: Zipf-distributed words, punctuation, numbers."""
    words = ("the of and to a in is it you that he was for on are with as I his they be at one "
             "have this from or had by hot word but what some we can out other were all there "
             "when up use your how said an each she which do their time if will way about many "
             "then them write would like so these her long make thing see him two has look "
             "more day could go come did number sound no most people my over know water than "
             "call first who may down side been now find head stand own page should country "
             "found answer school grow study still learn plant cover food sun four between "
             "attention transformer residual stream interpretability circuit Mary John").split()
    weights = [1.0 / (rank + 1) for rank in range(len(words))]
    rng = random.Random(seed)
    lines, size = [], 0
    while size < n_bytes:
        sentence = " ".join(rng.choices(words, weights, k=rng.randint(5, 25)))
        if rng.random() < 0.2:
            sentence += f" {rng.randint(0, 100000)}"
        line = sentence[0].upper() + sentence[1:] + rng.choice([".", "!", "?", ",", ";"])
        lines.append(line)
        size += len(line) + 1
    return lines


class TokenizeCliTest(unittest.TestCase):
    def tok(self, *flags, **kwargs):
        return run("--tokenizer", ARGS.bpe_dir, *flags, **kwargs)

    def test_encodes_each_text_on_its_own_line(self):
        rc, out, err = self.tok("The cat sat on the mat.", " Mary", "<|endoftext|>")
        self.assertEqual(rc, 0, err)
        self.assertEqual(out, "464,3797,3332,319,262,2603,13\n5335\n50256\n")

    def test_reads_stdin_when_no_text(self):
        rc, out, err = self.tok(stdin=b"The cat sat on the mat.")
        self.assertEqual((rc, out), (0, "464,3797,3332,319,262,2603,13\n"), err)
        rc, out, err = self.tok(stdin=b"a \xff!")  # ill-formed UTF-8 still encodes
        self.assertEqual(rc, 0, err)

    def test_decode(self):
        rc, out, err = self.tok("--decode", "464,3797", "3332 319, 262")
        self.assertEqual((rc, out), (0, "The cat\n sat on the\n"), err)
        rc, out, err = self.tok("--decode", stdin=b"464\n3797\n")
        self.assertEqual((rc, out), (0, "The cat\n"), err)

    def test_jsonl_round_trip(self):
        texts = ["The cat sat on the mat.", "", "caf\u00e9 \U0001F600\u200d\n\t<|endoftext|>x",
                 "  \u3000\u00a0 spaces"]
        stdin = "".join(json.dumps(t) + "\n" + ("\n" if i == 1 else "") for i, t in
                        enumerate(texts)).encode()
        rc, out, err = self.tok("--jsonl", stdin=stdin)
        self.assertEqual(rc, 0, err)
        ids = [json.loads(line) for line in out.splitlines()]
        self.assertEqual(len(ids), len(texts))
        self.assertEqual(ids[0], [464, 3797, 3332, 319, 262, 2603, 13])
        self.assertEqual(ids[1], [])
        rc, out, err = self.tok("--jsonl", "--decode", stdin=out.encode())
        self.assertEqual(rc, 0, err)
        self.assertEqual([json.loads(line) for line in out.splitlines()], texts)

    def test_errors(self):
        rc, _, err = run("The cat")
        self.assertEqual(rc, 2)
        self.assertIn("--model DIR or --tokenizer DIR", err)
        rc, _, err = run("--model", ARGS.bpe_dir, "--tokenizer", ARGS.bpe_dir, "x")
        self.assertNotEqual(rc, 0)
        rc, _, err = self.tok("--decode", "464,50257")
        self.assertEqual(rc, 1)
        self.assertIn("token id 50257 is not in the vocabulary", err)
        rc, _, err = self.tok("--decode", "464,x")
        self.assertEqual(rc, 1)
        self.assertIn('not a token id: "x"', err)
        rc, out, err = self.tok("--jsonl", stdin=b'"ok"\n{"text": 1}\n')
        self.assertEqual((rc, out), (1, "[482]\n"))
        self.assertIn("stdin:2: expected a JSON string", err)
        rc, _, err = self.tok("--jsonl", stdin=b'"ok"\n"unterminated\n')
        self.assertEqual(rc, 1)
        self.assertIn("stdin:2: invalid JSON", err)
        rc, _, err = self.tok("--jsonl", "--decode", stdin=b'[1, 2.5]\n')
        self.assertEqual(rc, 1)
        self.assertIn("stdin:1: not a token id: 2.5", err)
        rc, _, err = self.tok("--jsonl", "text")
        self.assertEqual(rc, 2)

    def test_model_dir_falls_back_to_default_files(self):
        with tempfile.TemporaryDirectory() as model_dir:
            rc, out, err = run("--model", model_dir, " Mary", env={"LENSGRID_BPE_DIR": ARGS.bpe_dir})
            self.assertEqual((rc, out), (0, "5335\n"), err)
            rc, _, err = run("--model", model_dir, "x", env={"LENSGRID_BPE_DIR": "/nonexistent"})
            self.assertEqual(rc, 1)
            self.assertIn("NOT_FOUND", err)
            self.assertIn("LENSGRID_BPE_DIR", err)
        rc, _, err = run("--model", "/nonexistent/model", "x")
        self.assertEqual(rc, 1)
        self.assertIn("/nonexistent/model: no such model dir", err)

    def test_ten_megabytes_of_jsonl(self):
        lines = english_like(10 << 20)
        stdin = "".join(json.dumps(line) + "\n" for line in lines).encode()
        start = time.monotonic()
        rc, out, err = self.tok("--jsonl", stdin=stdin)
        seconds = time.monotonic() - start
        self.assertEqual(rc, 0, err)
        self.assertEqual(out.count("\n"), len(lines))
        text_mb = sum(len(line.encode()) for line in lines) / 1e6
        print(f"\n10 MB JSONL: {text_mb:.1f} MB of text in {seconds:.2f} s "
              f"({text_mb / seconds:.1f} MB/s, process start and JSON included)", file=sys.stderr)


def main():
    global ARGS
    parser = argparse.ArgumentParser()
    parser.add_argument("--tool", required=True)
    parser.add_argument("--bpe-dir", required=True)
    parser.add_argument("--node-modules")
    parser.add_argument("--reference")
    ARGS, rest = parser.parse_known_args()
    if not os.path.isfile(os.path.join(ARGS.bpe_dir, "encoder.json")):
        print(f"SKIP: GPT-2 BPE files not in {ARGS.bpe_dir} (run scripts/bootstrap)")
        sys.exit(77)
    unittest.main(argv=[sys.argv[0], "-v", *rest])


if __name__ == "__main__":
    main()
