// Reference GPT-2 encoders from npm, for the parity test.
//
//   node gpt2_reference.js NODE_MODULES_DIR < strings.jsonl > ids.jsonl
//
// Reads one JSON string per line and writes one line per input:
//   {"gpt3": [ids...], "tiktoken": [ids...]}
// from two independent encoders: `gpt-3-encoder` (a line-by-line port of openai/gpt-2's
// encoder.py, splitting on "<|endoftext|>" here as Hugging Face does) and `js-tiktoken`'s gpt2
// encoding (special tokens allowed).
//
// Both run GPT-2's pattern as a JavaScript regex, whose \s differs from the Python `regex`
// module's that GPT-2 used: JavaScript adds U+FEFF and leaves out U+0085. So \s/\S are
// respelled \p{White_Space}/\P{White_Space} (the Unicode property Python's \s follows);
// nothing else changes. Pass --js-whitespace to run them unchanged.
'use strict';
const fs = require('fs');
const Module = require('module');
const path = require('path');
const readline = require('readline');

const args = process.argv.slice(2);
const jsWhitespace = args.includes('--js-whitespace');
const nodeModulesArg = args.find((a) => !a.startsWith('--'));
const nodeModules = nodeModulesArg && path.resolve(nodeModulesArg);
if (!nodeModules) {
  console.error('usage: node gpt2_reference.js NODE_MODULES_DIR [--js-whitespace]');
  process.exit(2);
}

function pythonWhitespace(pattern) {
  return jsWhitespace ? pattern
                      : pattern.replace(/\\s/g, '\\p{White_Space}').replace(/\\S/g, '\\P{White_Space}');
}

// gpt-3-encoder keeps its regex in a module-private const: load Encoder.js with it respelled.
function loadGpt3Encoder() {
  const file = path.join(nodeModules, 'gpt-3-encoder', 'Encoder.js');
  const source = fs.readFileSync(file, 'utf-8');
  const original = String.raw`/'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+/gu`;
  if (!source.includes(original)) throw new Error(`${file}: GPT-2's pattern not found`);
  const m = new Module(file, module);
  m.filename = file;
  m.paths = Module._nodeModulePaths(path.dirname(file));
  m._compile(source.replace(original, pythonWhitespace(original)), file);
  return m.exports;
}

function loadTiktoken() {
  const { Tiktoken } = require(path.join(nodeModules, 'js-tiktoken', 'dist', 'lite.cjs'));
  const ranks = require(path.join(nodeModules, 'js-tiktoken', 'dist', 'ranks', 'gpt2.cjs'));
  return new Tiktoken({ ...ranks, pat_str: pythonWhitespace(ranks.pat_str) });
}

const EOT = '<|endoftext|>';
const gpt3 = loadGpt3Encoder();
const tiktoken = loadTiktoken();

function gpt3Encode(text) {
  const ids = [];
  text.split(EOT).forEach((segment, i) => {
    if (i > 0) ids.push(50256);
    // encode() concatenates arrays per piece (quadratic): feed it moderate lines.
    for (const id of gpt3.encode(segment)) ids.push(id);
  });
  return ids;
}

const out = [];
const rl = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
rl.on('line', (line) => {
  if (line.trim() === '') return;
  const text = JSON.parse(line);
  out.push(JSON.stringify({ gpt3: gpt3Encode(text), tiktoken: tiktoken.encode(text, 'all') }));
  if (out.length >= 256) process.stdout.write(out.splice(0).join('\n') + '\n');
});
rl.on('close', () => {
  if (out.length) process.stdout.write(out.join('\n') + '\n');
});
