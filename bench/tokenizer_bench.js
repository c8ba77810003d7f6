// Node side of tokenizer_bench: times the npm GPT-2 encoders on the same documents.
//
//   node tokenizer_bench.js NODE_MODULES_DIR DOCS.jsonl [PASSES]
//
// DOCS.jsonl holds one JSON string per line; each is encoded on its own. Prints one JSON
// object: {"gpt-3-encoder": {"seconds": [pass1, ...], "tokens": N}, "js-tiktoken": {...}}.
'use strict';
const fs = require('fs');
const path = require('path');

const [nodeModulesArg, docsPath, passesArg] = process.argv.slice(2);
const nodeModules = path.resolve(nodeModulesArg);
const passes = Number(passesArg || 2);
const docs = fs.readFileSync(docsPath, 'utf-8').split('\n').filter(Boolean).map(JSON.parse);

const gpt3 = require(path.join(nodeModules, 'gpt-3-encoder'));
const { getEncoding } = require(path.join(nodeModules, 'js-tiktoken', 'dist', 'index.cjs'));
const tiktoken = getEncoding('gpt2');

function time(encode) {
  const seconds = [];
  let tokens = 0;
  for (let pass = 0; pass < passes; ++pass) {
    tokens = 0;
    const start = process.hrtime.bigint();
    for (const doc of docs) tokens += encode(doc).length;
    seconds.push(Number(process.hrtime.bigint() - start) / 1e9);
  }
  return { seconds, tokens };
}

const result = {
  'gpt-3-encoder': time((doc) => gpt3.encode(doc)),
  'js-tiktoken': time((doc) => tiktoken.encode(doc)),
};
process.stdout.write(JSON.stringify(result) + '\n');
