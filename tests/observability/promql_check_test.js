// Unit tests of promql_check.js: which queries pass and what is reported for
// those that do not. Run: node --test tests/observability/promql_check_test.js

'use strict';

const assert = require('node:assert');
const fs = require('node:fs');
const path = require('node:path');
const test = require('node:test');

const {Parser, QueryChecker, parseMetricsDoc} = require('./promql_check.js');

const METRICS = parseMetricsDoc(
    fs.readFileSync(
        path.join(__dirname, '..', '..', 'deploy', 'metrics.md'), 'utf8'),
    'deploy/metrics.md');

// Returns [problems, names] for one query.
function check(expr) {
  const problems = [];
  const names = new Set();
  new QueryChecker(
      METRICS, (metric, msg) => problems.push(`${metric}: ${msg}`), names)
      .check(expr);
  return [problems, [...names].sort()];
}

const GOOD = [
  'sum by (code, finish_reason) (rate(moe_gateway_requests_total[5m]))',
  'histogram_quantile(0.9, sum by (job, le) ' +
      '(rate(moe_gateway_time_to_first_token_seconds_bucket' +
      '[$__rate_interval])))',
  'histogram_quantile(0.5, rate(moe_expert_compute_seconds_bucket[1m]))',
  'sum(rate(moe_expert_group_tokens_sum[5m])) / ' +
      'sum(rate(moe_expert_group_tokens_count[5m]))',
  'max by (server, role) (moe_attention_kv_usage_ratio) > 0.9',
  'deriv(moe_attention_kv_usage_ratio[5m])',
  'max by (layer) (sum by (layer, expert) (rate(moe_router_tokens_total[5m])))',
  'sum(rate(moe_router_tokens_total[5m])) by (layer)',
  'sum by (layer) (rate(moe_router_dropped_slots_total[5m])) / on (layer) ' +
      'sum by (layer) (rate(moe_router_tokens_total[5m]))',
  'up{job=~".*moe-expert.*"} == 0 or moe_router_expert_server_up == 0',
  '(sum(rate(moe_gateway_requests_total{code!="OK"}[5m])) or vector(0))',
  'rate(moe_router_tokens_total[5m] offset 1h)',
  'max_over_time(rate(moe_router_tokens_total[1m])[10m:1m])',
  'max_over_time(moe_attention_kv_usage_ratio[1h:1m])',
  'count(moe_router_tokens_total)',
  'absent(moe_router_expert_server_down_total)',
  'topk(5, sum by (layer, expert) (rate(moe_router_tokens_total[5m])))',
  'moe_attention_kv_usage_ratio > $threshold',
  'label_replace(moe_gateway_requests_running, "x", "$1", "job", "(.*)")',
  '-moe_gateway_requests_running + 1 # a comment',
];

const BAD = [
  [
    'rate(moe_attention_kv_usage_ratio[5m])',
    'rate() over gauge moe_attention_kv_usage_ratio'
  ],
  [
    'moe_gateway_requests_total',
    'counter moe_gateway_requests_total used without rate() or increase()'
  ],
  [
    'sum(rate(moe_gateway_nonexistent_total[5m]))',
    'moe_gateway_nonexistent_total: unknown metric'
  ],
  ['vllm:num_requests_running', 'vllm:num_requests_running: unknown metric'],
  [
    'histogram_quantile(0.9, ' +
        'sum(rate(moe_gateway_time_to_first_token_seconds_bucket[5m])))',
    'histogram_quantile() over an argument without the "le" label'
  ],
  [
    'histogram_quantile(0.9, ' +
        'sum by (le) (rate(' +
        'moe_gateway_time_to_first_token_seconds_count[5m])))',
    'label "le" in by (...) is not a label of ' +
        'moe_gateway_time_to_first_token_seconds_count'
  ],
  [
    'sum by (reason) (rate(moe_gateway_requests_total[5m]))',
    'label "reason" in by (...) is not a label of moe_gateway_requests_total'
  ],
  [
    'max by (server) (sum by (layer) (rate(moe_router_tokens_total[5m])))',
    'label "server" in by (...) is not a label of its argument (layer)'
  ],
  [
    'rate(moe_router_tokens_total{code="x"}[5m])',
    'label "code" in a matcher is not a label of moe_router_tokens_total'
  ],
  [
    'sum by (layer) (rate(moe_router_dropped_slots_total[5m])) / on (layer) ' +
        'group_left (expert) ' +
        'sum by (layer) (rate(moe_router_tokens_total[5m]))',
    'label "expert" in group_left (...)'
  ],
  [
    'rate(moe_gateway_requests_total_bucket[5m])',
    '_bucket on moe_gateway_requests_total, which is a counter'
  ],
  [
    'moe_gateway_time_to_first_token_seconds',
    'histogram moe_gateway_time_to_first_token_seconds has no series'
  ],
  [
    'deriv(moe_gateway_requests_total[5m])',
    'deriv() over counter moe_gateway_requests_total'
  ],
  [
    'moe_gateway_requests_running[5m]',
    'range vector moe_gateway_requests_running[...] outside a range function'
  ],
  ['rate(moe_gateway_requests_total)', 'rate() needs a range vector'],
  ['foo(moe_gateway_requests_running)', 'unknown function foo()'],
  ['sum(rate(moe_router_tokens_total[5m]) by (layer)', 'cannot parse expr'],
  ['{job="moe-router"}', 'selector without a metric name'],
  ['rate(moe_router_tokens_total[5m])[1h]', 'use a subquery [range:step]'],
];

test('accepts well-formed queries over documented metrics', () => {
  for (const expr of GOOD) {
    assert.deepStrictEqual(check(expr)[0], [], expr);
  }
});

test('reports each kind of misuse', () => {
  for (const [expr, expected] of BAD) {
    const [problems] = check(expr);
    assert.ok(
        problems.some((p) => p.includes(expected)),
        `${expr}\n  expected: ${expected}\n  got: ${problems.join('; ')}`);
  }
});

test('collects base names of the metrics queried', () => {
  assert.deepStrictEqual(
      check(
          'histogram_quantile(0.9, sum by (le) (rate(' +
          'moe_router_fanout_seconds_bucket[5m]))) + ' +
          'up + moe_router_balancedness_ratio')[1],
      ['moe_router_balancedness_ratio', 'moe_router_fanout_seconds', 'up']);
});

test('parses operator precedence and modifiers', () => {
  const ast = new Parser('a + b * c ^ d ^ e > bool 1 or f unless g').parseAll();
  assert.strictEqual(ast.op, 'or');
  assert.strictEqual(ast.lhs.op, '>');
  assert.strictEqual(ast.lhs.bool, true);
  assert.strictEqual(ast.lhs.lhs.op, '+');
  assert.strictEqual(ast.lhs.lhs.rhs.op, '*');
  assert.strictEqual(ast.lhs.lhs.rhs.rhs.op, '^');
  assert.strictEqual(ast.lhs.lhs.rhs.rhs.rhs.op, '^');  // Right-associative.
  assert.strictEqual(ast.rhs.op, 'unless');
});
