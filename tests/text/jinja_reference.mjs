// The independent reference for tests/chat_template_test.cc: Hugging Face's
// @huggingface/jinja (JavaScript), whose Template applies trim_blocks and
// lstrip_blocks as transformers' apply_chat_template does.
//
//   MOE_TEXT_NODE_DIR=<build>/text-node node jinja_reference.mjs CASES.json
// CASES: {"cases": [{"template": "...", "context": {...}}, ...]}
// Prints {"rendered": [{"ok": true, "text": "..."} |
//                      {"ok": false, "error": "..."}, ...]} in case order.
import fs from 'fs';
import path from 'path';
import {pathToFileURL} from 'url';

const nodeDir = process.env.MOE_TEXT_NODE_DIR;
if (!nodeDir) {
  console.error('jinja_reference.mjs: set MOE_TEXT_NODE_DIR');
  process.exit(2);
}
const {Template} = await import(pathToFileURL(path.join(
    nodeDir, 'node_modules/@huggingface/jinja/dist/index.js')).href);
const cases = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const rendered = cases.cases.map((c) => {
  try {
    return {ok: true, text: new Template(c.template).render(c.context)};
  } catch (e) {
    return {ok: false, error: String(e && e.message ? e.message : e)};
  }
});
process.stdout.write(JSON.stringify({rendered}) + '\n');
