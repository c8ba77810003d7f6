"""Parity: lensgrid's GPT-2 tokenizer gives the same ids as two npm GPT-2 encoders under Node.

Generates a corpus (deterministic; --seed or $LENSGRID_TOKENIZER_SEED varies it) covering every
Unicode general category that UTF-8 can carry (every assigned code point of Python's
unicodedata appears, chunked by category and mixed at random), whitespace runs of every
kind, numbers, contractions in all cases, code, URLs, emoji and ZWJ sequences, combining
marks, long words, <|endoftext|>, natural text in many scripts and random strings. Then:

  1. ids from `lensgrid tokenize --jsonl` == ids from gpt-3-encoder == ids from js-tiktoken
     (gpt2_reference.js), on 100% of lines;
  2. `--jsonl --decode` of those ids gives back every line exactly.

Exits 77 (skipped) when node or the npm packages are missing.
"""
import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import unicodedata

WHITE_SPACE = [0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x20, 0x85, 0xA0, 0x1680, *range(0x2000, 0x200B),
               0x2028, 0x2029, 0x202F, 0x205F, 0x3000]
# Look like space but are not White_Space (JavaScript's \s has U+FEFF; PCRE2's has U+180E;
# Python's str.isspace has U+001C..U+001F), plus zero-width characters.
SPACE_LOOKALIKES = [0xFEFF, 0x180E, 0x200B, 0x200C, 0x200D, 0x2060, 0x1C, 0x1D, 0x1E, 0x1F,
                    0x00, 0xAD]
# Code points unassigned in every Unicode version so far (Cn): noncharacters, planes 4-13.
UNASSIGNED = [*range(0xFDD0, 0xFDF0), 0xFFFE, 0xFFFF, 0x1FFFE, 0x10FFFF, 0x40000, 0x5ABCD,
              0x9FFFF, 0xDFFFD]
ASCII_PRINTABLE = "".join(map(chr, range(0x20, 0x7F)))


def code_points_by_category():
    by_category = {}
    for cp in range(0x110000):
        category = unicodedata.category(chr(cp))
        if category in ("Cs", "Cn"):  # UTF-8 cannot carry surrogates; Cn handled apart
            continue
        by_category.setdefault(category, []).append(cp)
    by_category["Cn"] = list(UNASSIGNED)
    return by_category


def chunks(items, size):
    return [items[i:i + size] for i in range(0, len(items), size)]


def category_lines(rng, by_category):
    """Every code point, in runs of its own category joined in varied ways, then mixed."""
    lines = []
    joins = [" ", "", "a", "1", ".", "\n", " x ", "'s ", "\u00a0", "  "]
    for category, cps in sorted(by_category.items()):
        cps = list(cps)
        if category == "Co":  # 137k private-use code points: a sample is enough
            cps = rng.sample(cps, 3000) + [0xE000, 0xF8FF, 0xF0000, 0x10FFFD]
        rng.shuffle(cps)
        for group in chunks(cps, 64):
            pieces = ["".join(map(chr, run)) for run in chunks(group, rng.randint(1, 8))]
            lines.append("".join(p + rng.choice(joins) for p in pieces))
    # Mixed categories, so every kind of boundary between classes occurs.
    categories = sorted(by_category)
    for _ in range(3000):
        lines.append("".join(chr(rng.choice(by_category[rng.choice(categories)]))
                             for _ in range(rng.randint(1, 12))))
    return lines


def whitespace_lines(rng):
    spaces = [chr(cp) for cp in WHITE_SPACE + SPACE_LOOKALIKES]
    lines = []
    for a in spaces:
        lines += [a, a * 3, f"x{a}y", f"x {a}y", f"x{a} y", f"x{a}", f"{a}x", f"x{a}{a}.",
                  f"{a}'s", f"{a}1", f"{a}\u00e9", f"x {a}{a}  \n"]
        for b in spaces:
            lines.append(f"w{a}{b}w {a}{b} {b}{a}")
    for _ in range(1500):
        run = "".join(rng.choice(spaces) for _ in range(rng.randint(1, 10)))
        word = rng.choice(["word", "1", "!", "'ll", "\u4e2d", "\U0001F600", "", "\u0301"])
        lines.append(rng.choice(["", "a", "a."]) + run + word + rng.choice(["", run, " "]))
    lines += ["\r\n" * 3, "line\r\nline\r\n", "\t\tindented\n\t\t\tmore", " " * 1000,
              "a" + " " * 500 + "b", "\n" * 200, " \n \n ", "x\u3000\u3000y\u3000"]
    return lines


def number_lines(rng):
    lines = ["123", "1,234,567.89", "3.14159265358979", "-42", "+1e-10", "0x1F", "2024-01-31",
             "12:30:45", "$9.99", "50%", "1st 2nd 3rd 4th", "v1.2.3", "007", "1 000 000",
             "\u0661\u0662\u0663 \u0967\u0968\u0969 \uff11\uff12\uff13 \u2160\u216b \u00bd\u00be "
             "\u00b2\u00b3 \u2460\u2461 \U0001D7D8\U0001D7D9 \u4e00\u4e8c\u4e09 \u0e51\u0e52",
             "a1b2c3 123abc abc123 12.34.56 1/2 3\u20444"]
    for _ in range(400):
        lines.append(" ".join(str(rng.randint(0, 10 ** rng.randint(1, 30)))
                              for _ in range(rng.randint(1, 6))))
    lines += ["".join(rng.choice("0123456789") for _ in range(n)) for n in (100, 777, 2000)]
    return lines


def contraction_lines():
    lines = []
    suffixes = ["s", "t", "re", "ve", "m", "ll", "d", "x", ""]
    for suffix in suffixes:
        cases = {suffix}
        for mask in range(1 << len(suffix)):
            cases.add("".join(c.upper() if mask >> i & 1 else c for i, c in enumerate(suffix)))
        for case in sorted(cases):
            for apostrophe in ["'", "\u2019", "\u02bc", "''"]:
                c = apostrophe + case
                lines += [f"it{c}", f"IT{c} ", f" {c}", f"{c}", f"x{c}y", f"1{c}", f"{c}{c}",
                          f"don{c}.", f"  {c}ok", f"({c})"]
    lines += ["I'm sure you're right, he'd've said they'll go; it's John's, isn't it?",
              "DON'T SHOUT! WE'RE HERE. Y'ALL'D'VE", "rock 'n' roll 'til '90s", "'''''", "'"]
    return lines


CODE = [
    'def f(x):\n    """Doc."""\n    return {"a": [1, 2.5, None], \'b\': x ** 2}  # note\n',
    "#include <vector>\nint main(int argc, char** argv) {\n\tstd::vector<int> v{1,2};\n"
    "\treturn v.size() > 1 ? 0 : -1;\n}\n",
    "const re = /'s|\\s+(?!\\S)/gu; let s = `tmpl ${a+b}`; a?.b ?? c; x => x*2;",
    '{"key": "value", "n": -1.5e3, "arr": [true, false, null], "nested": {"\\u00e9": "\\n"}}',
    "<html><head><title>T&amp;C</title></head><body class=\"x\">&nbsp;<br/></body></html>",
    "SELECT * FROM users WHERE id = 42 AND name LIKE '%o''brien%';",
    "for i in $(seq 1 10); do echo \"$i\" | grep -E '^[0-9]+$' >> /tmp/out.log 2>&1; done",
    "    if (x) {\r\n        y();\r\n    }\r\n",
    "fn main() { let v: Vec<u8> = b\"bytes\".to_vec(); println!(\"{:?}\", v); }",
    "\\begin{equation} \\int_0^\\infty e^{-x^2} dx = \\frac{\\sqrt{\\pi}}{2} \\end{equation}",
    "diff --git a/x b/x\n@@ -1,3 +1,4 @@\n-old\n+new\n+++\n",
]

URLS = ["https://example.com/path/to/page?query=1&x=y#frag",
        "http://user:pass@host.example.org:8080/a%20b", "mailto:someone@example.com",
        "ftp://files.example.net/pub/file.tar.gz", "www.example.co.uk/index.html",
        "git@github.com:owner/repo.git", "C:\\Users\\Name\\Documents\\file.txt",
        "/usr/local/bin/python3 --version", "https://\u4f8b\u3048.\u30c6\u30b9\u30c8/\u30d1\u30b9",
        "see <https://en.wikipedia.org/wiki/Byte_pair_encoding>.", "@handle #hashtag $TICKER"]

EMOJI = ["\U0001F600", "\U0001F44D\U0001F3FD", "\U0001F468\u200D\U0001F469\u200D\U0001F467"
         "\u200D\U0001F466", "\U0001F1FA\U0001F1F8\U0001F1EF\U0001F1F5", "1\uFE0F\u20E3",
         "\u2764\uFE0F", "\U0001F3F3\uFE0F\u200D\U0001F308", "\U0001F9D1\U0001F3FF\u200D"
         "\U0001F91D\u200D\U0001F9D1\U0001F3FB", "\U0001F469\u200D\U0001F4BB", "\u263A\uFE0E",
         "\U0001F3F4\U000E0067\U000E0062\U000E0073\U000E0063\U000E0074\U000E007F"]

COMBINING = ["e\u0301 cafe\u0301 nai\u0308ve", "Z\u0351\u0308\u0363a\u0352\u036cl\u0313g\u0310o",
             "\u1100\u1161\u11a8 \ud55c\uad6d\uc5b4", "\u0915\u094d\u0937 \u0928\u092e\u0938\u094d\u0924\u0947",
             "\u0e2a\u0e27\u0e31\u0e2a\u0e14\u0e35", "\u0627\u0644\u0652\u0639\u064e\u0631\u064e\u0628\u0650\u064a\u0651\u064e\u0629",
             "\u05e9\u05b8\u05c1\u05dc\u05d5\u05b9\u05dd", " \u0301", "1\u0301", "\u0301start",
             "x" + "\u0300" * 50, "a\u20dd b\u20e3", "\u0041\u030a \u00c5 \u212b"]

PROSE = ["The quick brown fox jumps over the lazy dog. It's 5 o'clock somewhere!",
         "Zw\u00f6lf Boxk\u00e4mpfer jagen Viktor quer \u00fcber den gro\u00dfen Sylter Deich.",
         "Voix ambigu\u00eb d'un c\u0153ur qui, au z\u00e9phyr, pr\u00e9f\u00e8re les jattes de kiwis.",
         "\u0421\u044a\u0435\u0448\u044c \u0436\u0435 \u0435\u0449\u0451 \u044d\u0442\u0438\u0445 \u043c\u044f\u0433\u043a\u0438\u0445 \u0444\u0440\u0430\u043d\u0446\u0443\u0437\u0441\u043a\u0438\u0445 \u0431\u0443\u043b\u043e\u043a.",
         "\u039e\u03b5\u03c3\u03ba\u03b5\u03c0\u03ac\u03b6\u03c9 \u03c4\u03b7\u03bd \u03c8\u03c5\u03c7\u03bf\u03c6\u03b8\u03cc\u03c1\u03b1 \u03b2\u03b4\u03b5\u03bb\u03c5\u03b3\u03bc\u03af\u03b1.",
         "\u6211\u80fd\u541e\u4e0b\u73bb\u7483\u800c\u4e0d\u4f24\u8eab\u4f53\u3002\u4f60\u597d\uff0c\u4e16\u754c\uff01",
         "\u3044\u308d\u306f\u306b\u307b\u3078\u3068 \u3061\u308a\u306c\u308b\u3092 \u30ab\u30bf\u30ab\u30ca\u3068\u6f22\u5b57\u3002",
         "\ub2e4\ub78c\uc950 \ud5cc \uccc7\ubc14\ud034\uc5d0 \ud0c0\uace0\ud30c",
         "\u0635\u0650\u0641 \u062e\u064e\u0644\u0642\u064e \u062e\u064e\u0648\u0652\u062f\u0650 \u0643\u064e\u0645\u0650\u062b\u0652\u0644\u0650",
         "\u05d3\u05d2 \u05e1\u05e7\u05e8\u05df \u05e9\u05d8 \u05d1\u05d9\u05dd \u05de\u05d0\u05d5\u05db\u05d6\u05d1",
         "\u090b\u0937\u093f\u092f\u094b\u0902 \u0915\u094b \u0938\u0924\u093e\u0928\u0947 \u0935\u093e\u0932\u0947",
         "\u0e40\u0e1b\u0e47\u0e19\u0e21\u0e19\u0e38\u0e29\u0e22\u0e4c\u0e2a\u0e38\u0e14\u0e1b\u0e23\u0e30\u0e40\u0e2a\u0e23\u0e34\u0e10"]

EOT = ["<|endoftext|>", "a<|endoftext|>b", " <|endoftext|> ", "<|endoftext|><|endoftext|>",
       "<|endoftext", "<|endoftext|", "<<|endoftext|>>", "<|ENDOFTEXT|>", "x\n<|endoftext|>\nThe",
       "'s<|endoftext|>'s", "<|endoftext|>" * 5 + "end"]


def long_word_lines(rng):
    letters = "abcdefghijklmnopqrstuvwxyz"
    return ["pneumonoultramicroscopicsilicovolcanoconiosis", "supercalifragilistic" * 50,
            "".join(rng.choice(letters) for _ in range(2000)), "a" * 2000, " " + "b" * 1500,
            "=" * 1500, "-" * 800 + "\n", "\u4e2d\u6587" * 400, "\U0001F600" * 300,
            "".join(rng.choice("ACGT") for _ in range(2000)), "Hello" * 300,
            "".join(chr(rng.randint(0x400, 0x44F)) for _ in range(1000))]


def random_lines(rng, by_category):
    pools = [ASCII_PRINTABLE, "'sStTlLdDmMrReEvV ", "".join(map(chr, WHITE_SPACE + SPACE_LOOKALIKES)),
             "".join(map(chr, range(0xA0, 0x250))), "".join(map(chr, range(0x4E00, 0x4F00))),
             "".join(map(chr, range(0x1F300, 0x1F650))), "\u200d\ufe0f\u0301\u20e3"]
    everything = [cp for cps in by_category.values() for cp in cps]
    lines = []
    for _ in range(4000):
        chars = []
        for _ in range(rng.randint(1, 60)):
            if rng.random() < 0.15:
                chars.append(chr(rng.choice(everything)))
            else:
                chars.append(rng.choice(rng.choice(pools)))
        lines.append("".join(chars))
    for _ in range(1000):
        lines.append("".join(rng.choice(ASCII_PRINTABLE + "\t\n'") for _ in range(rng.randint(1, 80))))
    return lines


def license_lines():
    """Real English prose, where the system has it (Debian's base-files)."""
    lines = []
    for name in ("GPL-3", "Apache-2.0"):
        path = os.path.join("/usr/share/common-licenses", name)
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                lines += [p for p in f.read().split("\n\n") if p.strip()]
    return lines


def build_corpus(seed):
    rng = random.Random(seed)
    by_category = code_points_by_category()
    corpus = (category_lines(rng, by_category) + whitespace_lines(rng) + number_lines(rng) +
              contraction_lines() + CODE + URLS + EMOJI + [" ".join(EMOJI), "".join(EMOJI)] +
              COMBINING + PROSE + EOT + long_word_lines(rng) + random_lines(rng, by_category) +
              license_lines())
    # Mixtures of everything above, so no kind of text is only ever seen on its own.
    corpus += ["".join(rng.sample(corpus, 3)) for _ in range(500)]
    return [line for line in corpus if line], by_category


def run_jsonl(command, lines_path):
    with open(lines_path, "rb") as stdin:
        proc = subprocess.run(command, stdin=stdin, capture_output=True, timeout=1200)
    if proc.returncode != 0:
        sys.exit(f"FAIL: {command[0]} exited {proc.returncode}: {proc.stderr.decode()[-2000:]}")
    return [json.loads(line) for line in proc.stdout.decode().split("\n") if line]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--tool", required=True)
    parser.add_argument("--bpe-dir", required=True)
    parser.add_argument("--node-modules", required=True)
    parser.add_argument("--reference", required=True)
    parser.add_argument("--seed", type=int,
                        default=int(os.environ.get("LENSGRID_TOKENIZER_SEED", "20240603")))
    args = parser.parse_args()
    node = shutil.which("node")
    needed = [os.path.join(args.node_modules, p) for p in ("gpt-3-encoder", "js-tiktoken")]
    if node is None or not all(os.path.isdir(p) for p in needed):
        print(f"SKIP: needs node and {needed} (run scripts/bootstrap)")
        sys.exit(77)

    corpus, by_category = build_corpus(args.seed)
    present = {unicodedata.category(c) for line in corpus for c in line}
    print(f"corpus: seed {args.seed}, {len(corpus)} lines, {sum(map(len, corpus))} code points, "
          f"{sum(len(l.encode()) for l in corpus) / 1e6:.2f} MB; Unicode {unicodedata.unidata_version}; "
          f"general categories present: {len(present)} ({' '.join(sorted(present))})")
    missing = set(by_category) - present
    if missing:
        sys.exit(f"FAIL: corpus lacks categories {sorted(missing)}")

    with tempfile.TemporaryDirectory() as tmp:
        lines_path = os.path.join(tmp, "corpus.jsonl")
        with open(lines_path, "w") as f:
            f.writelines(json.dumps(line) + "\n" for line in corpus)
        start = time.monotonic()
        ours = run_jsonl([args.tool, "--tokenizer", args.bpe_dir, "--jsonl"], lines_path)
        ours_s = time.monotonic() - start
        start = time.monotonic()
        refs = run_jsonl([node, args.reference, args.node_modules], lines_path)
        refs_s = time.monotonic() - start
        js_refs = run_jsonl([node, args.reference, args.node_modules, "--js-whitespace"],
                            lines_path)
        ids_path = os.path.join(tmp, "ids.jsonl")
        with open(ids_path, "w") as f:
            f.writelines(json.dumps(ids) + "\n" for ids in ours)
        decoded = run_jsonl([args.tool, "--tokenizer", args.bpe_dir, "--jsonl", "--decode"],
                            ids_path)

    assert len(ours) == len(refs) == len(js_refs) == len(decoded) == len(corpus), "line counts"
    print(f"ours: {ours_s:.2f} s; node (both references): {refs_s:.2f} s; "
          f"{sum(map(len, ours))} tokens")
    failures = 0
    for name in ("gpt3", "tiktoken"):
        bad = [i for i, (o, r) in enumerate(zip(ours, refs)) if o != r[name]]
        print(f"{name}: {len(corpus) - len(bad)}/{len(corpus)} lines identical")
        for i in bad[:10]:
            print(f"  line {i}: {json.dumps(corpus[i])[:200]}\n    ours {ours[i][:40]}\n"
                  f"    {name} {refs[i][name][:40]}")
        failures += len(bad)
    # The encoders unchanged (JavaScript's \s) must differ only where U+0085 or U+FEFF occur:
    # evidence that the corpus reaches the whitespace edge and that nothing else was changed.
    js_bad = [i for i, (o, r) in enumerate(zip(ours, js_refs)) if o != r["gpt3"]]
    unexplained = [i for i in js_bad if "\x85" not in corpus[i] and "\ufeff" not in corpus[i]]
    print(f"unchanged JavaScript \\s: {len(js_bad)} lines differ, all with U+0085 or U+FEFF: "
          f"{not unexplained}")
    for i in unexplained[:10]:
        print(f"  line {i}: {json.dumps(corpus[i])[:200]}")
    failures += len(unexplained) + (len(js_bad) == 0)
    bad = [i for i, (text, back) in enumerate(zip(corpus, decoded)) if text != back]
    print(f"decode(encode(x)) == x: {len(corpus) - len(bad)}/{len(corpus)} lines")
    for i in bad[:10]:
        print(f"  line {i}: {json.dumps(corpus[i])[:200]} -> {json.dumps(decoded[i])[:200]}")
    failures += len(bad)
    if failures:
        sys.exit("FAIL")
    print("PASS")


if __name__ == "__main__":
    main()
