// The reference side of moe-text-bench's tokenizer throughput:
// @huggingface/tokenizers encoding and decoding the same documents, timed
// the same way (one thread, each document encoded, then its ids decoded).
//
//   MOE_TEXT_NODE_DIR=<build>/text-node node tokenizer_bench.js \
//       TOKENIZER_DIR DOCUMENTS.json REPEATS
// DOCUMENTS.json: a JSON array of strings. Prints one JSON line:
//   {"encode_seconds": [...], "decode_seconds": [...], "tokens": N,
//    "bytes": N} with one time per repeat, after a warm-up pass.
import fs from 'fs';
import path from 'path';
import {pathToFileURL} from 'url';

const nodeDir = process.env.MOE_TEXT_NODE_DIR;
if (!nodeDir) {
  console.error('tokenizer_bench.js: set MOE_TEXT_NODE_DIR to the node folder');
  process.exit(2);
}
const [dir, documentsPath, repeatsText] = process.argv.slice(2);
const {Tokenizer} = await import(pathToFileURL(path.join(
    nodeDir, 'node_modules/@huggingface/tokenizers/dist/tokenizers.mjs')).href);
const json = JSON.parse(fs.readFileSync(path.join(dir, 'tokenizer.json'), 'utf8'));
const configPath = path.join(dir, 'tokenizer_config.json');
const config = fs.existsSync(configPath)
    ? JSON.parse(fs.readFileSync(configPath, 'utf8')) : {};
const tokenizer = new Tokenizer(json, config);
const documents = JSON.parse(fs.readFileSync(documentsPath, 'utf8'));
const repeats = Number(repeatsText);

function encodeAll() {
  return documents.map((d) => tokenizer.encode(d, {add_special_tokens: false}).ids);
}
function decodeAll(ids) {
  let chars = 0;
  for (const list of ids) chars += tokenizer.decode(list).length;
  return chars;
}

let ids = encodeAll();  // warm-up
decodeAll(ids);
const encodeSeconds = [];
const decodeSeconds = [];
for (let r = 0; r < repeats; ++r) {
  let start = process.hrtime.bigint();
  ids = encodeAll();
  encodeSeconds.push(Number(process.hrtime.bigint() - start) / 1e9);
  start = process.hrtime.bigint();
  decodeAll(ids);
  decodeSeconds.push(Number(process.hrtime.bigint() - start) / 1e9);
}
let tokens = 0;
for (const list of ids) tokens += list.length;
let bytes = 0;
for (const d of documents) bytes += Buffer.byteLength(d, 'utf8');
process.stdout.write(JSON.stringify({encode_seconds: encodeSeconds,
                                     decode_seconds: decodeSeconds,
                                     tokens, bytes}) + '\n');
