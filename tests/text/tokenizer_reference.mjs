// The independent reference for tests/tokenizer_test.cc: Hugging Face's
// @huggingface/tokenizers (JavaScript) on a real tokenizer folder.
//
//   MOE_TEXT_NODE_DIR=<build>/text-node node tokenizer_reference.mjs CASES.json
// CASES: {"tokenizer_dir": "...",
//         "encode": [{"text": "...", "add_special_tokens": bool}, ...],
//         "decode": [{"ids": [...], "skip_special_tokens": bool}, ...]}
// Prints {"encoded": [[ids]...], "decoded": ["text"...]} in case order.
import fs from 'fs';
import path from 'path';
import {pathToFileURL} from 'url';

const nodeDir = process.env.MOE_TEXT_NODE_DIR;
if (!nodeDir) {
  console.error('tokenizer_reference.mjs: set MOE_TEXT_NODE_DIR');
  process.exit(2);
}
const {Tokenizer, ByteFallbackDecoder} = await import(pathToFileURL(path.join(
    nodeDir, 'node_modules/@huggingface/tokenizers/dist/tokenizers.mjs')).href);

// Two places where the JavaScript port differs from the Rust `tokenizers`
// and Python `transformers` that checkpoints are made for; the reference
// follows the Rust/Python behaviour:
//  1. Rust's ByteFallback decoder turns a run of byte tokens that is not
//     valid UTF-8 into one U+FFFD per byte; the port's TextDecoder gives one
//     per maximal invalid subsequence.
//  2. transformers' LlamaTokenizerFast rebuilds the post-processor from
//     tokenizer_config.json's add_bos_token/add_eos_token
//     (update_post_processor), so DeepSeek-V3 (ByteLevel post-processor,
//     add_bos_token true) starts with BOS; the port reads tokenizer.json's
//     post-processor only.
const strictUtf8 = new TextDecoder('utf-8', {fatal: true});
ByteFallbackDecoder.prototype.decode_chain = function(tokens) {
  const out = [];
  let bytes = [];
  const flush = () => {
    if (bytes.length === 0) return;
    try {
      out.push(strictUtf8.decode(Uint8Array.from(bytes)));
    } catch {
      for (let i = 0; i < bytes.length; ++i) out.push('\uFFFD');
    }
    bytes = [];
  };
  for (const token of tokens) {
    const byte = token.length === 6 && token.startsWith('<0x') && token.endsWith('>')
        ? parseInt(token.slice(3, 5), 16) : NaN;
    if (!isNaN(byte)) {
      bytes.push(byte);
    } else {
      flush();
      out.push(token);
    }
  }
  flush();
  return out;
};

const cases = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const dir = cases.tokenizer_dir;
const json = JSON.parse(fs.readFileSync(path.join(dir, 'tokenizer.json'), 'utf8'));
const configPath = path.join(dir, 'tokenizer_config.json');
const config = fs.existsSync(configPath)
    ? JSON.parse(fs.readFileSync(configPath, 'utf8')) : {};
const tokenizer = new Tokenizer(json, config);
const tokenText = (t) => (t && typeof t === 'object' ? t.content : t);
const llamaFast = ['LlamaTokenizerFast', 'LlamaTokenizer'].includes(config.tokenizer_class) &&
    json.post_processor?.type !== 'TemplateProcessing';
const bosId = llamaFast && config.add_bos_token
    ? tokenizer.token_to_id(tokenText(config.bos_token)) : undefined;
const eosId = llamaFast && config.add_eos_token
    ? tokenizer.token_to_id(tokenText(config.eos_token)) : undefined;
const encoded = cases.encode.map((c) => {
  const ids = tokenizer.encode(c.text, {add_special_tokens: c.add_special_tokens}).ids;
  if (!c.add_special_tokens) return ids;
  return [...(bosId !== undefined ? [bosId] : []), ...ids,
          ...(eosId !== undefined ? [eosId] : [])];
});
// The JavaScript decode refuses an empty list; Python's returns "".
const decoded = cases.decode.map(
    (c) => c.ids.length === 0
        ? ''
        : tokenizer.decode(c.ids, {skip_special_tokens: c.skip_special_tokens}));
process.stdout.write(JSON.stringify({encoded, decoded}) + '\n');
