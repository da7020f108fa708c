// Runs requests against an OpenAI-compatible server with the official
// `openai` npm client (a client no one here wrote) and prints what it got,
// as JSON, for tests/openai_e2e_test.cc.
//
//   MOE_TEXT_NODE_DIR=<build>/text-node node openai_client.js SPEC.json
//
// SPEC: {"base_url": "...", "api_key": "...", "requests": [REQUEST...]}
// REQUEST: {"kind": "chat" | "completion", "params": {...create() body...},
//           "abort_after_chunks": N (streams only: abort the HTTP request
//           after N chunks, as a user closing a tab does)}
// Output: {"results": [RESULT...]} in request order, where RESULT is
//   {"text", "chunks": [text per chunk], "token_ids", "finish_reason",
//    "usage", "logprobs", "ids": [response id per chunk], "aborted"}
// or {"error": {"status", "message", "param", "type"}} when the client threw.
'use strict';

const fs = require('fs');
const path = require('path');

const nodeDir = process.env.MOE_TEXT_NODE_DIR;
if (!nodeDir) {
  console.error('openai_client.js: set MOE_TEXT_NODE_DIR to the node folder');
  process.exit(2);
}
const OpenAI = require(path.join(nodeDir, 'node_modules', 'openai'));

function choiceText(kind, choice) {
  if (kind === 'chat') {
    const holder = choice.delta !== undefined ? choice.delta : choice.message;
    return holder && typeof holder.content === 'string' ? holder.content : '';
  }
  return typeof choice.text === 'string' ? choice.text : '';
}

async function runStream(client, request) {
  const api = request.kind === 'chat' ? client.chat.completions
                                      : client.completions;
  const controller = new AbortController();
  const stream = await api.create({...request.params, stream: true},
                                  {signal: controller.signal});
  const result = {text: '', chunks: [], token_ids: [], finish_reason: null,
                  usage: null, logprobs: [], ids: [], roles: [],
                  aborted: false};
  try {
    for await (const chunk of stream) {
      result.ids.push(chunk.id);
      if (chunk.usage) result.usage = chunk.usage;
      for (const choice of chunk.choices || []) {
        const text = choiceText(request.kind, choice);
        result.text += text;
        result.chunks.push(text);
        if (choice.delta && choice.delta.role) result.roles.push(choice.delta.role);
        if (Array.isArray(choice.token_ids)) result.token_ids.push(...choice.token_ids);
        if (choice.logprobs) result.logprobs.push(choice.logprobs);
        if (choice.finish_reason) result.finish_reason = choice.finish_reason;
      }
      if (request.abort_after_chunks !== undefined &&
          result.chunks.length >= request.abort_after_chunks) {
        result.aborted = true;
        controller.abort();
        break;
      }
    }
  } catch (e) {
    if (!result.aborted) throw e;
  }
  return result;
}

async function runOnce(client, request) {
  const api = request.kind === 'chat' ? client.chat.completions
                                      : client.completions;
  const response = await api.create({...request.params, stream: false});
  const choice = response.choices[0];
  return {text: choiceText(request.kind, choice), chunks: [],
          token_ids: choice.token_ids || [], finish_reason: choice.finish_reason,
          usage: response.usage, logprobs: choice.logprobs ? [choice.logprobs] : [],
          ids: [response.id], object: response.object,
          role: choice.message ? choice.message.role : undefined,
          aborted: false};
}

async function main() {
  const spec = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
  const client = new OpenAI({baseURL: spec.base_url,
                             apiKey: spec.api_key || 'unused',
                             maxRetries: 0, timeout: 120000});
  const results = [];
  for (const request of spec.requests) {
    try {
      results.push(request.params.stream ? await runStream(client, request)
                                         : await runOnce(client, request));
    } catch (e) {
      const body = e.error || {};
      results.push({error: {status: e.status || null,
                            message: body.message || String(e.message || e),
                            param: body.param === undefined ? null : body.param,
                            type: body.type || null}});
    }
  }
  process.stdout.write(JSON.stringify({results}) + '\n');
}

main().catch((e) => {
  console.error('openai_client.js:', e && e.stack ? e.stack : e);
  process.exit(1);
});
