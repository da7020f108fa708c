// PromQL checks against the metric contract in deploy/metrics.md, for
// check_dashboards.js: a parser for the PromQL that dashboards and alert
// rules use (selectors, range vectors, subqueries, functions, aggregations
// with by/without, binary operators with on/ignoring/group_*, offset, @,
// and Grafana's $variables) and a QueryChecker that walks its AST to find
// unknown metrics, types used the wrong way (rate() over a gauge, a counter
// without rate(), _bucket on a non-histogram) and labels a metric does not
// carry. It is a checker, not an evaluator: it tracks which labels a
// result may carry, not values.

'use strict';

// clang-format off
// Labels every scraped series may carry: Prometheus' own and those of the
// file_sd targets moe-cluster writes (see deploy/prometheus/prometheus.yml).
const TARGET_LABELS = ['instance', 'job', 'server', 'role'];

// Functions whose range-vector argument must be a counter (or histogram
// part, which are counters).
const COUNTER_RANGE_FUNCTIONS =
    new Set(['rate', 'irate', 'increase', 'resets']);
// Functions meant for gauges: over a counter they give nonsense.
const GAUGE_RANGE_FUNCTIONS =
    new Set(['delta', 'idelta', 'deriv', 'predict_linear', 'holt_winters']);
const ANY_RANGE_FUNCTIONS = new Set([
  'avg_over_time', 'min_over_time', 'max_over_time', 'sum_over_time',
  'count_over_time', 'quantile_over_time', 'stddev_over_time',
  'stdvar_over_time', 'last_over_time', 'present_over_time', 'absent_over_time',
  'changes',
]);
// Functions that may look at a counter's raw value.
const RAW_COUNTER_FUNCTIONS = new Set(['absent', 'timestamp']);
const RAW_COUNTER_AGGREGATIONS = new Set(['count', 'group', 'count_values']);
// Functions that keep their argument's labels.
const INSTANT_FUNCTIONS = new Set([
  'abs', 'ceil', 'floor', 'round', 'exp', 'ln', 'log2', 'log10', 'sqrt',
  'clamp', 'clamp_min', 'clamp_max', 'sgn', 'sort', 'sort_desc', 'timestamp',
  'day_of_month', 'day_of_week', 'day_of_year', 'days_in_month', 'hour',
  'minute', 'month', 'year', 'acos', 'acosh', 'asin', 'asinh', 'atan', 'atanh',
  'cos', 'cosh', 'sin', 'sinh', 'tan', 'tanh', 'deg', 'rad',
]);
const SCALAR_FUNCTIONS = new Set(['scalar', 'time', 'pi', 'vector']);
const AGGREGATIONS = new Set([
  'sum', 'min', 'max', 'avg', 'group', 'stddev', 'stdvar', 'count',
  'count_values', 'bottomk', 'topk', 'quantile',
]);
const AGGREGATIONS_WITH_PARAM =
    new Set(['count_values', 'bottomk', 'topk', 'quantile']);
const BINARY_PRECEDENCE = {
  'or': 1, 'and': 2, 'unless': 2,
  '==': 3, '!=': 3, '<=': 3, '<': 3, '>=': 3, '>': 3,
  '+': 4, '-': 4, '*': 5, '/': 5, '%': 5, 'atan2': 5, '^': 6,
};
const SET_OPERATORS = new Set(['and', 'or', 'unless']);
// clang-format on

// A number, or a duration such as 5m or 1h30m (group 4 is the units).
const NUMBER_OR_DURATION = new RegExp(
    '^(0[xX][0-9a-fA-F]+|(\\d+\\.?\\d*|\\.\\d+)([eE][+-]?\\d+)?)' +
    '((ms|[smhdwy])(\\d+(ms|[smhdwy]))*)?');

// ---------------------------------------------------------------------------
// deploy/metrics.md

// Returns Map name -> {type, labels: Set} from the markdown tables whose
// first cell is a backquoted metric name.
function parseMetricsDoc(text, file) {
  const metrics = new Map();
  for (const line of text.split('\n')) {
    const cells = line.split('|').map((c) => c.trim());
    // '| `name` | type | labels | meaning |' splits into ['', name, ...].
    if (cells.length < 5 || cells[0] !== '') continue;
    const name = /^`([a-zA-Z_:][a-zA-Z0-9_:]*)`$/.exec(cells[1]);
    if (!name) continue;
    const type = cells[2];
    if (!['counter', 'gauge', 'histogram'].includes(type)) {
      throw new Error(`${file}: ${name[1]}: unknown type "${type}"`);
    }
    const labels = new Set();
    for (const m of cells[3].matchAll(/`([a-zA-Z_][a-zA-Z0-9_]*)`/g)) {
      labels.add(m[1]);
    }
    metrics.set(name[1], {type, labels});
  }
  if (metrics.size === 0) throw new Error(`${file}: no metric tables found`);
  return metrics;
}

// What a series name is, given the contract: {base, type, part, labels}
// where part is 'bucket', 'sum', 'count' for histogram series, or an
// {error} when the name is not exported.
function resolveMetric(metrics, name) {
  if (name === 'up') {
    return {base: 'up', type: 'gauge', part: null, labels: new Set()};
  }
  const exact = metrics.get(name);
  if (exact) {
    if (exact.type === 'histogram') {
      return {
        error: `histogram ${name} has no series of its own; ` +
            `query ${name}_bucket, ${name}_sum or ${name}_count`
      };
    }
    return {base: name, type: exact.type, part: null, labels: exact.labels};
  }
  const suffix = /^(.*)_(bucket|sum|count)$/.exec(name);
  if (suffix) {
    const base = metrics.get(suffix[1]);
    if (base && base.type === 'histogram') {
      const labels = new Set(base.labels);
      if (suffix[2] === 'bucket') labels.add('le');
      return {base: suffix[1], type: 'histogram', part: suffix[2], labels};
    }
    if (base) {
      return {
        error: `_${suffix[2]} on ${suffix[1]}, which is a ` +
            `${base.type}, not a histogram`
      };
    }
  }
  return {error: 'unknown metric (not in deploy/metrics.md)'};
}

// ---------------------------------------------------------------------------
// PromQL: tokenizer and parser into a small AST.

class ParseError extends Error {}

function tokenize(src) {
  const tokens = [];
  let i = 0;
  const push = (type, value, start) => tokens.push({type, value, pos: start});
  while (i < src.length) {
    const c = src[i];
    const start = i;
    if (/\s/.test(c)) {
      i++;
      continue;
    }
    if (c === '#') {
      while (i < src.length && src[i] !== '\n') i++;
      continue;
    }
    if (c === '"' || c === '\'' || c === '`') {
      i++;
      let value = '';
      while (i < src.length && src[i] !== c) {
        if (src[i] === '\\' && c !== '`') i++;
        value += src[i++];
      }
      if (i >= src.length)
        throw new ParseError(`unterminated string at ${start}`);
      i++;
      push('str', value, start);
      continue;
    }
    if (c === '[') {
      // A range, a subquery range or a Grafana [[variable]]: opaque here.
      const end = src.indexOf(']', i);
      if (end < 0) throw new ParseError(`unterminated [ at ${start}`);
      if (src[i + 1] === '[') {
        i = src.indexOf(']]', i) + 2;
        if (i < 2) throw new ParseError(`unterminated [[ at ${start}`);
        push('var', src.slice(start, i), start);
      } else {
        push('range', src.slice(i + 1, end).trim(), start);
        i = end + 1;
      }
      continue;
    }
    if (c === '$') {
      const m = /^\$(\{[^}]*\}|[a-zA-Z0-9_]+)/.exec(src.slice(i));
      if (!m) throw new ParseError(`stray $ at ${start}`);
      i += m[0].length;
      push('var', m[0], start);
      continue;
    }
    const num = NUMBER_OR_DURATION.exec(src.slice(i));
    if (num && /[0-9.]/.test(c)) {
      i += num[0].length;
      push(num[4] ? 'duration' : 'num', num[0], start);
      continue;
    }
    const ident = /^[a-zA-Z_:][a-zA-Z0-9_:]*/.exec(src.slice(i));
    if (ident) {
      i += ident[0].length;
      push('ident', ident[0], start);
      continue;
    }
    const op = /^(==|!=|<=|>=|=~|!~|[-+*/%^<>=(){},@])/.exec(src.slice(i));
    if (op) {
      i += op[0].length;
      push('op', op[0], start);
      continue;
    }
    throw new ParseError(`unexpected "${c}" at ${start}`);
  }
  push('eof', '', src.length);
  return tokens;
}

class Parser {
  constructor(src) {
    this.tokens = tokenize(src);
    this.i = 0;
  }
  peek(k = 0) {
    return this.tokens[this.i + k];
  }
  next() {
    return this.tokens[this.i++];
  }
  isOp(value, k = 0) {
    const t = this.peek(k);
    return t.type === 'op' && t.value === value;
  }
  expectOp(value) {
    const t = this.next();
    if (t.type !== 'op' || t.value !== value) {
      throw new ParseError(
          `expected "${value}" at ${t.pos}, got ` +
          (t.type === 'eof' ? 'the end' : `"${t.value}"`));
    }
  }
  fail(t, what) {
    throw new ParseError(
        `unexpected ${t.type === 'eof' ? 'end' : `"${t.value}"`} at ${t.pos}` +
        (what ? `, expected ${what}` : ''));
  }

  parseAll() {
    const e = this.parseBinary(0);
    if (this.peek().type !== 'eof') this.fail(this.peek(), 'an operator');
    return e;
  }

  // The operator at the cursor, if any: '+', 'and', 'atan2', ...
  binaryOperator() {
    const t = this.peek();
    if (t.type === 'op' && t.value in BINARY_PRECEDENCE) return t.value;
    if (t.type === 'ident' && t.value.toLowerCase() in BINARY_PRECEDENCE) {
      return t.value.toLowerCase();
    }
    return null;
  }

  parseBinary(minPrecedence) {
    let lhs = this.parseUnary();
    for (;;) {
      const op = this.binaryOperator();
      if (!op || BINARY_PRECEDENCE[op] < minPrecedence) return lhs;
      this.next();
      const node = {kind: 'bin', op, lhs, bool: false, matching: null};
      if (this.peek().type === 'ident' && this.peek().value === 'bool') {
        this.next();
        node.bool = true;
      }
      const t = this.peek();
      if (t.type === 'ident' && (t.value === 'on' || t.value === 'ignoring')) {
        this.next();
        node.matching = {
          mode: t.value,
          labels: this.parseLabelList(),
          group: null
        };
        const g = this.peek();
        if (g.type === 'ident' &&
            (g.value === 'group_left' || g.value === 'group_right')) {
          this.next();
          node.matching.group = {
            side: g.value,
            labels: this.isOp('(') ? this.parseLabelList() : [],
          };
        }
      }
      // '^' is right-associative, the others left.
      node.rhs = this.parseBinary(
          op === '^' ? BINARY_PRECEDENCE[op] : BINARY_PRECEDENCE[op] + 1);
      lhs = node;
    }
  }

  parseUnary() {
    if (this.isOp('-') || this.isOp('+')) {
      this.next();
      return {kind: 'unary', expr: this.parseUnary()};
    }
    return this.parsePostfix(this.parsePrimary());
  }

  // Subqueries, offset and @ after an expression.
  parsePostfix(node) {
    for (;;) {
      const t = this.peek();
      if (t.type === 'range') {
        // A selector's own [range] was taken by parseRange().
        this.next();
        if (!t.value.includes(':')) {
          throw new ParseError(
              `range [${t.value}] at ${t.pos} on an expression; use a ` +
              'subquery [range:step]');
        }
        node = {kind: 'subquery', expr: node};
      } else if (t.type === 'ident' && t.value === 'offset') {
        this.next();
        if (this.isOp('-')) this.next();
        const d = this.next();
        if (d.type !== 'duration' && d.type !== 'var')
          this.fail(d, 'a duration');
      } else if (this.isOp('@')) {
        this.next();
        const at = this.next();
        if (at.type === 'ident' &&
            (at.value === 'start' || at.value === 'end')) {
          this.expectOp('(');
          this.expectOp(')');
        } else if (at.type !== 'num' && at.type !== 'var') {
          this.fail(at, 'a timestamp');
        }
      } else {
        return node;
      }
    }
  }

  parsePrimary() {
    const t = this.next();
    if (t.type === 'num' || t.type === 'duration') return {kind: 'num'};
    if (t.type === 'str') return {kind: 'str', value: t.value};
    if (t.type === 'var') return {kind: 'var', value: t.value};
    if (t.type === 'op' && t.value === '(') {
      const expr = this.parseBinary(0);
      this.expectOp(')');
      return {kind: 'paren', expr};
    }
    if (t.type === 'op' && t.value === '{') {
      return this.parseSelector(null, t.pos);
    }
    if (t.type !== 'ident') this.fail(t, 'an expression');
    const lower = t.value.toLowerCase();
    if ((lower === 'inf' || lower === 'nan') && !this.isOp('(') &&
        !this.isOp('{')) {
      return {kind: 'num'};
    }
    if (AGGREGATIONS.has(t.value) &&
        (this.isOp('(') || this.peek().value === 'by' ||
         this.peek().value === 'without')) {
      return this.parseAggregation(t);
    }
    if (this.isOp('(')) {
      this.next();
      const args = [];
      if (!this.isOp(')')) {
        for (;;) {
          args.push(this.parseBinary(0));
          if (this.isOp(')')) break;
          this.expectOp(',');
        }
      }
      this.expectOp(')');
      return {kind: 'call', fn: t.value, args, pos: t.pos};
    }
    this.i--;
    return this.parseSelector(t.value, t.pos);
  }

  parseAggregation(t) {
    const node =
        {kind: 'agg', op: t.value, grouping: null, param: null, pos: t.pos};
    const grouping = () => {
      const g = this.peek();
      if (g.type === 'ident' && (g.value === 'by' || g.value === 'without')) {
        if (node.grouping) this.fail(g, null);
        this.next();
        node.grouping = {mode: g.value, labels: this.parseLabelList()};
      }
    };
    grouping();
    this.expectOp('(');
    if (AGGREGATIONS_WITH_PARAM.has(t.value)) {
      node.param = this.parseBinary(0);
      this.expectOp(',');
    }
    node.expr = this.parseBinary(0);
    this.expectOp(')');
    grouping();
    return node;
  }

  parseLabelList() {
    this.expectOp('(');
    const labels = [];
    while (!this.isOp(')')) {
      const l = this.next();
      if (l.type !== 'ident') this.fail(l, 'a label name');
      labels.push(l.value);
      if (!this.isOp(')')) this.expectOp(',');
    }
    this.expectOp(')');
    return labels;
  }

  // NAME, NAME{matchers} or {matchers}, then an optional [range]. The
  // cursor is on NAME, or past the '{' when name is null.
  parseSelector(name, pos) {
    const node = {kind: 'sel', name, matchers: [], range: false, pos};
    if (name !== null) {
      this.next();
      if (this.isOp('{'))
        this.next();
      else
        return this.parseRange(node);
    }
    while (!this.isOp('}')) {
      const l = this.next();
      if (l.type !== 'ident') this.fail(l, 'a label name');
      const op = this.next();
      if (op.type !== 'op' || !['=', '!=', '=~', '!~'].includes(op.value)) {
        this.fail(op, 'a label matcher operator');
      }
      const v = this.next();
      if (v.type !== 'str') this.fail(v, 'a quoted label value');
      node.matchers.push({label: l.value, op: op.value, value: v.value});
      if (!this.isOp('}')) this.expectOp(',');
    }
    this.expectOp('}');
    if (node.name === null) {
      const n =
          node.matchers.find((m) => m.label === '__name__' && m.op === '=');
      if (n) node.name = n.value;
    }
    return this.parseRange(node);
  }

  parseRange(node) {
    const t = this.peek();
    if (t.type === 'range' && !t.value.includes(':')) {
      this.next();
      node.range = true;
    }
    return node;
  }
}

// ---------------------------------------------------------------------------
// Semantic checks over the AST.

class QueryChecker {
  // report(metric, message) records one problem; names collects the
  // metrics referenced.
  constructor(metrics, report, names) {
    this.metrics = metrics;
    this.report = report;
    this.names = names;
  }

  check(expr) {
    let ast;
    try {
      ast = new Parser(expr).parseAll();
    } catch (e) {
      if (!(e instanceof ParseError)) throw e;
      this.report('', `cannot parse expr: ${e.message}: ${expr.trim()}`);
      return;
    }
    this.labelsOf(ast, {rangeFunction: null, rawCounterOk: false});
  }

  // The contract's view of a selector's metric ({base, type, part, labels}),
  // or null after reporting why it has none.
  resolve(sel) {
    if (sel.name === null) {
      this.report(
          '',
          'selector without a metric name: ' +
              sel.matchers.map((m) => m.label + m.op).join(','));
      return null;
    }
    const r = resolveMetric(this.metrics, sel.name);
    if (r.error) {
      this.names.add(sel.name);
      this.report(sel.name, r.error);
      return null;
    }
    this.names.add(r.base);
    return r;
  }

  // Returns the set of labels the node's result may carry (null for a
  // scalar or string) and reports misuse. ctx.rangeFunction is the function
  // a range vector selector directly feeds; ctx.rawCounterOk whether a
  // counter may be read without rate().
  labelsOf(node, ctx) {
    switch (node.kind) {
      case 'num':
      case 'str':
      case 'var':
        return null;
      case 'paren':
      case 'unary':
        return this.labelsOf(node.expr, ctx);
      case 'subquery':
        return this.labelsOf(
            node.expr, {rangeFunction: null, rawCounterOk: false});
      case 'sel':
        return this.selectorLabels(node, ctx);
      case 'call':
        return this.callLabels(node, ctx);
      case 'agg':
        return this.aggregationLabels(node, ctx);
      case 'bin':
        return this.binaryLabels(node, ctx);
    }
    throw new Error(`unknown node ${node.kind}`);
  }

  selectorLabels(sel, ctx) {
    const r = this.resolve(sel);
    if (!r) return null;
    const allowed = new Set([...r.labels, ...TARGET_LABELS]);
    for (const m of sel.matchers) {
      if (m.label !== '__name__' && !allowed.has(m.label)) {
        this.report(
            sel.name,
            `label "${m.label}" in a matcher is not a label ` +
                `of ${sel.name} (${describe(allowed)})`);
      }
    }
    const counterLike = r.type === 'counter' || r.type === 'histogram';
    const kind = r.type === 'histogram' ? 'histogram series' : r.type;
    const fn = ctx.rangeFunction;
    if (sel.range) {
      if (fn === null) {
        this.report(
            sel.name,
            `range vector ${sel.name}[...] outside a range function such ` +
                'as rate()');
      } else if (COUNTER_RANGE_FUNCTIONS.has(fn) && !counterLike) {
        this.report(
            sel.name,
            `${fn}() over gauge ${sel.name}; ${fn}() is for counters (use ` +
                'the gauge itself, or deriv()/delta())');
      } else if (GAUGE_RANGE_FUNCTIONS.has(fn) && counterLike) {
        this.report(
            sel.name,
            `${fn}() over ${kind} ${sel.name}; use rate() or increase()`);
      }
    } else if (fn !== null) {
      this.report(sel.name, `${fn}() needs a range vector: ${sel.name}[...]`);
    } else if (counterLike && !ctx.rawCounterOk) {
      this.report(
          sel.name, `${kind} ${sel.name} used without rate() or increase()`);
    }
    return allowed;  // r.labels has `le` for _bucket series.
  }

  callLabels(call, ctx) {
    const fn = call.fn;
    const inner = {rangeFunction: null, rawCounterOk: false};
    const argLabels = (k, c) =>
        call.args[k] ? this.labelsOf(call.args[k], c || inner) : null;
    const rangeCtx = {rangeFunction: fn, rawCounterOk: false};
    if (COUNTER_RANGE_FUNCTIONS.has(fn) || GAUGE_RANGE_FUNCTIONS.has(fn) ||
        ANY_RANGE_FUNCTIONS.has(fn)) {
      // quantile_over_time(q, v[r]); predict_linear(v[r], t);
      // holt_winters(v[r], sf, tf).
      const k = fn === 'quantile_over_time' ? 1 : 0;
      call.args.forEach((a, j) => {
        if (j !== k) this.labelsOf(a, inner);
      });
      return argLabels(k, rangeCtx);
    }
    if (fn === 'histogram_quantile') {
      if (call.args.length !== 2) {
        this.report('', 'histogram_quantile() takes (quantile, buckets)');
        return null;
      }
      this.labelsOf(call.args[0], inner);
      const labels = argLabels(1);
      if (labels && !labels.has('le')) {
        const names = selectorNames(call.args[1]).join(', ');
        this.report(
            names,
            'histogram_quantile() over an argument without ' +
                'the "le" label (aggregate with "by (le, ...)" over ' +
                '_bucket series)');
      }
      if (labels) labels.delete('le');
      return labels;
    }
    if (fn === 'label_replace' || fn === 'label_join') {
      const labels = argLabels(0);
      call.args.slice(1).forEach((a) => this.labelsOf(a, inner));
      const dst = call.args[1];
      if (labels && dst && dst.kind === 'str') labels.add(dst.value);
      return labels;
    }
    if (fn === 'absent') {
      this.labelsOf(call.args[0], {rangeFunction: null, rawCounterOk: true});
      return new Set();
    }
    if (RAW_COUNTER_FUNCTIONS.has(fn) || INSTANT_FUNCTIONS.has(fn)) {
      const raw = RAW_COUNTER_FUNCTIONS.has(fn) || ctx.rawCounterOk;
      call.args.slice(1).forEach((a) => this.labelsOf(a, inner));
      return argLabels(0, {rangeFunction: null, rawCounterOk: raw});
    }
    if (SCALAR_FUNCTIONS.has(fn)) {
      call.args.forEach((a) => this.labelsOf(a, inner));
      return fn === 'vector' ? new Set() : null;
    }
    this.report('', `unknown function ${fn}()`);
    call.args.forEach((a) => this.labelsOf(a, inner));
    return null;
  }

  aggregationLabels(agg, ctx) {
    if (agg.param)
      this.labelsOf(agg.param, {rangeFunction: null, rawCounterOk: false});
    const labels = this.labelsOf(agg.expr, {
      rangeFunction: null,
      rawCounterOk: RAW_COUNTER_AGGREGATIONS.has(agg.op),
    });
    if (!labels) return null;
    // No grouping clause aggregates everything, like by ().
    const grouping = agg.grouping || {mode: 'by', labels: []};
    this.checkLabelsPresent(
        agg.expr, labels, grouping.labels, `${grouping.mode} (...)`);
    let out;
    if (agg.op === 'topk' || agg.op === 'bottomk') {
      out = labels;
    } else if (grouping.mode === 'by') {
      out = new Set(grouping.labels);
    } else {
      out = new Set([...labels].filter((l) => !grouping.labels.includes(l)));
    }
    if (agg.op === 'count_values' && agg.param && agg.param.kind === 'str') {
      out.add(agg.param.value);
    }
    return out;
  }

  binaryLabels(bin, ctx) {
    const sub = {rangeFunction: null, rawCounterOk: false};
    const lhs = this.labelsOf(bin.lhs, sub);
    const rhs = this.labelsOf(bin.rhs, sub);
    if (!lhs || !rhs) return lhs || rhs;  // Scalar on one side.
    const m = bin.matching;
    if (m) {
      for (const [side, labels] of [[bin.lhs, lhs], [bin.rhs, rhs]]) {
        this.checkLabelsPresent(side, labels, m.labels, `${m.mode} (...)`);
      }
      if (m.group) {
        const other = m.group.side === 'group_left' ? bin.rhs : bin.lhs;
        this.checkLabelsPresent(
            other, m.group.side === 'group_left' ? rhs : lhs, m.group.labels,
            `${m.group.side} (...)`);
      }
    }
    if (bin.op === 'or') return new Set([...lhs, ...rhs]);
    if (SET_OPERATORS.has(bin.op)) return lhs;
    if (m && m.group) {
      const many = m.group.side === 'group_left' ? lhs : rhs;
      return new Set([...many, ...m.group.labels]);
    }
    if (m && m.mode === 'on') return new Set(m.labels);
    // One-to-one: both sides must match on all their labels.
    const both = new Set([...lhs].filter((l) => rhs.has(l)));
    if (m) m.labels.forEach((l) => both.delete(l));
    return both;
  }

  // Reports each of `wanted` that `have` (the labels of `node`) lacks,
  // naming the metrics under node that do not carry it.
  checkLabelsPresent(node, have, wanted, where) {
    for (const l of wanted) {
      if (have.has(l)) continue;
      const lacking = [];
      for (const sel of selectors(node)) {
        const r = sel.name !== null && resolveMetric(this.metrics, sel.name);
        if (!r || r.error) continue;
        const own = new Set([...r.labels, ...TARGET_LABELS]);
        if (!own.has(l)) lacking.push(`${sel.name} (${describe(own)})`);
      }
      const names = [...new Set(selectors(node).map((s) => s.name))].join(', ');
      this.report(
          names,
          `label "${l}" in ${where} is not a label of ` +
              (lacking.length ? [...new Set(lacking)].join(', ') :
                                `its argument (${describe(have)})`));
    }
  }
}

function selectors(node) {
  const out = [];
  const walk = (n) => {
    if (!n || typeof n !== 'object') return;
    if (n.kind === 'sel') out.push(n);
    for (const k of ['expr', 'lhs', 'rhs', 'param']) walk(n[k]);
    if (n.args) n.args.forEach(walk);
  };
  walk(node);
  return out;
}

function selectorNames(node) {
  return [...new Set(selectors(node).map((s) => s.name))];
}

function describe(labels) {
  return [...labels].sort().join(', ');
}

module.exports = {
  ParseError,
  Parser,
  QueryChecker,
  parseMetricsDoc,
  resolveMetric,
};
