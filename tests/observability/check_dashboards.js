#!/usr/bin/env node
// Checks the Grafana dashboards and Prometheus alert rules against the metric
// contract in deploy/metrics.md.
//
//   node tests/observability/check_dashboards.js
//       [--dashboards DIR] [--rules FILE] [--metrics FILE]
//       [--list | --export_rules FILE]
//
// Defaults: deploy/grafana, deploy/prometheus/alerts.yml, deploy/metrics.md
// of this repository. Every *.json directly in DIR is a dashboard.
//
// Checks:
//  - every dashboard parses and has a uid, a title, schemaVersion >= 39, the
//    `datasource` template variable (type datasource, query prometheus),
//    unique panel ids, gridPos within the 24 columns and not overlapping,
//    and every query target an `expr`, a `legendFormat` and the
//    `${datasource}` data source;
//  - every query (dashboard targets, template variable queries, alert `expr`)
//    parses as PromQL and names only metrics of deploy/metrics.md (or `up`),
//    with `_bucket`/`_sum`/`_count` only on histograms, rate()-like functions
//    only over counters and histogram parts, counters and histogram parts
//    never without one, no bare histogram names, histogram_quantile() over
//    something that keeps `le`;
//  - every label in a selector, `by (...)`, `without (...)`, `on (...)`,
//    `ignoring (...)` or `group_*(...)` is one the metric documents, or a
//    target label (instance, job, server, role), or `le` on `_bucket`.
// The PromQL parsing and checks are in promql_check.js.
// Each problem is printed on stderr as
//   FILE: panel "TITLE" (id N): METRIC: what is wrong
// and the exit status is 1 if there is any (2 for bad usage).
//
// --list prints instead, on stdout, the metric names the dashboards and rules
// query, one per line, sorted, histograms by their base name, without
// Prometheus' own `up`; it checks nothing, so that a scrape test can compare
// the list with what the servers really export.
//
// --export_rules FILE also writes every dashboard query, Grafana's interval
// variables replaced by 1m, as a Prometheus recording rule named
// <dashboard uid>:panel_<id>_<refId>, so that `promtool check rules FILE`
// can parse them with Prometheus' own parser.
//
// No npm dependencies.

'use strict';

const fs = require('fs');
const path = require('path');
const {QueryChecker, parseMetricsDoc} = require('./promql_check.js');

const REPO_ROOT = path.resolve(__dirname, '..', '..');

// ---------------------------------------------------------------------------
// Alert rules: a reader for the subset of YAML rule files use, enough to
// find each rule's name and `expr` (plain, quoted or block scalars).

function indent(line) {
  return line.length - line.trimStart().length;
}

function unquote(value, file, lineNo) {
  value = value.trim();
  if (value.startsWith('\'')) {
    if (!value.endsWith('\'') || value.length < 2) {
      throw new Error(`${file}:${lineNo}: unterminated quoted scalar`);
    }
    return value.slice(1, -1).replace(/''/g, '\'');
  }
  if (value.startsWith('"')) {
    if (!value.endsWith('"') || value.length < 2) {
      throw new Error(`${file}:${lineNo}: unterminated quoted scalar`);
    }
    return JSON.parse(value);
  }
  return value.replace(/\s+#.*$/, '');
}

// Returns [{name, line, expr}] for every rule (alert or record) of the file.
function readRuleExprs(text, file) {
  const lines = text.split('\n');
  // Rule items by the column of their keys; a key belongs to the item whose
  // keys start at its column.
  const items = [];
  const open = new Map();  // key column -> item
  for (let n = 0; n < lines.length; n++) {
    const raw = lines[n].replace(/\t/g, '    ');
    if (/^\s*(#.*)?$/.test(raw)) continue;
    const m = /^(\s*)((?:-\s+)*)([A-Za-z_][A-Za-z0-9_]*):(\s+(.*))?$/.exec(raw);
    if (!m) continue;
    const column = m[1].length + m[2].length;
    for (const c of [...open.keys()])
      if (c > column) open.delete(c);
    if (m[2]) {
      open.set(column, {line: n + 1});
      items.push(open.get(column));
    }
    const item = open.get(column);
    if (!item) continue;
    const key = m[3];
    const value = m[5] === undefined ? '' : m[5];
    if (key === 'alert' || key === 'record') {
      item.name = `${key} "${unquote(value, file, n + 1)}"`;
    } else if (key !== 'expr' && /^[|>][-+0-9]*\s*(#.*)?$/.test(value.trim())) {
      // Another block scalar (a description, say): skip its text.
      while (n + 1 < lines.length &&
             (lines[n + 1].trim() === '' || indent(lines[n + 1]) > column)) {
        n++;
      }
    } else if (key === 'expr') {
      item.exprLine = n + 1;
      // Following lines indented past the key column continue the value.
      const body = [];
      let k = n + 1;
      for (; k < lines.length; k++) {
        if (lines[k].trim() !== '' && indent(lines[k]) <= column) break;
        body.push(lines[k]);
      }
      while (body.length && body[body.length - 1].trim() === '') body.pop();
      if (/^[|>][-+0-9]*\s*(#.*)?$/.test(value.trim())) {
        const first = body.find((l) => l.trim() !== '');
        const strip = first ? indent(first) : 0;
        const block = body.map((l) => l.slice(strip));
        item.expr =
            value.trim().startsWith('|') ? block.join('\n') : block.join(' ');
      } else if (/^['"]/.test(value.trim())) {
        item.expr = unquote(
            [value, ...body.map((l) => l.trim())].join(' '), file, n + 1);
      } else {
        item.expr = [
          unquote(value, file, n + 1), ...body.map((l) => l.trim())
        ].join(' ');
      }
      n = k - 1;
    }
  }
  const rules = [];
  for (const item of items) {
    if (item.expr === undefined) continue;
    rules.push({
      name: item.name || 'rule',
      line: item.exprLine,
      expr: item.expr,
    });
  }
  return rules;
}

// ---------------------------------------------------------------------------
// Dashboards.

function isDatasourceVariable(ds) {
  if (typeof ds === 'string')
    return ds === '${datasource}' || ds === '$datasource';
  return ds && typeof ds === 'object' &&
      (ds.uid === '${datasource}' || ds.uid === '$datasource');
}

// Panels including those inside (collapsed) rows.
function allPanels(dashboard) {
  const out = [];
  for (const p of dashboard.panels || []) {
    out.push(p);
    for (const q of p.panels || []) out.push(q);
  }
  return out;
}

// Grafana's built-in interval variables, which PromQL cannot parse.
function substituteGrafanaIntervals(expr) {
  return expr.replace(
      /\$\{?(__rate_interval|__interval|__range)\}?(?![a-zA-Z0-9_])/g, '1m');
}

// Adds to `exported` one {group, record, expr} per query target.
function checkDashboard(file, dashboard, problems, checkerFor, exported) {
  const where = (p) => p ? `${file}: panel "${p.title}" (id ${p.id})` : file;
  const problem = (p, msg) => problems.push(`${where(p)}: ${msg}`);
  for (const key of ['uid', 'title']) {
    if (typeof dashboard[key] !== 'string' || dashboard[key] === '') {
      problem(null, `no ${key}`);
    }
  }
  if (!(dashboard.schemaVersion >= 39)) {
    problem(
        null, `schemaVersion ${dashboard.schemaVersion}, expected 39 or later`);
  }
  const vars = (dashboard.templating && dashboard.templating.list) || [];
  const ds = vars.find((v) => v.name === 'datasource');
  if (!ds || ds.type !== 'datasource' || ds.query !== 'prometheus') {
    problem(
        null,
        'no template variable "datasource" of type datasource ' +
            'with query "prometheus"');
  }
  let queries = 0;
  for (const v of vars) {
    if (v.type !== 'query') continue;
    const q = typeof v.query === 'string' ? v.query : (v.query || {}).query;
    if (!q) continue;
    queries++;
    const report = (metric, msg) => problems.push(
        `${file}: variable "${v.name}": ${metric ? metric + ': ' : ''}${msg}`);
    const lv =
        /^\s*label_values\((.*),\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\)\s*$/.exec(q);
    const qr = /^\s*query_result\((.*)\)\s*$/.exec(q);
    // label_values(label) lists a label over all series: nothing to check.
    if (/^\s*label_values\(\s*[a-zA-Z_][a-zA-Z0-9_]*\s*\)\s*$/.test(q))
      continue;
    const expr = lv ? lv[1] : qr ? qr[1] : null;
    if (expr === null) {
      report('', `unsupported variable query: ${q}`);
      continue;
    }
    checkerFor(report).check(lv ? `group by (${lv[2]}) (${expr})` : expr);
  }
  const ids = new Map();
  const panels = allPanels(dashboard);
  for (const p of panels) {
    if (!Number.isInteger(p.id)) {
      problem(p, 'panel without an integer id');
    } else if (ids.has(p.id)) {
      problem(p, `panel id ${p.id} also used by panel "${ids.get(p.id)}"`);
    } else {
      ids.set(p.id, p.title);
    }
    if (typeof p.title !== 'string' || p.title === '') {
      problem(p, 'panel without a title');
    }
    const g = p.gridPos;
    if (!g || !['x', 'y', 'w', 'h'].every((k) => Number.isInteger(g[k]))) {
      problem(p, 'no gridPos {x, y, w, h}');
    } else if (g.x < 0 || g.w < 1 || g.h < 1 || g.x + g.w > 24) {
      problem(p, `gridPos ${JSON.stringify(g)} outside the 24-column grid`);
    }
    if (p.type === 'row') continue;
    if (!isDatasourceVariable(p.datasource)) {
      problem(p, 'datasource is not the ${datasource} variable');
    }
    const targets = p.targets || [];
    if (targets.length === 0) problem(p, 'no targets');
    const refIds = new Set();
    for (const t of targets) {
      if (refIds.has(t.refId)) problem(p, `refId ${t.refId} used twice`);
      refIds.add(t.refId);
      if (t.datasource !== undefined && !isDatasourceVariable(t.datasource)) {
        problem(
            p,
            `target ${t.refId}: datasource is not the ` +
                '${datasource} variable');
      }
      if (typeof t.legendFormat !== 'string') {
        problem(p, `target ${t.refId}: no legendFormat`);
      }
      if (typeof t.expr !== 'string' || t.expr.trim() === '') {
        problem(p, `target ${t.refId}: no expr`);
        continue;
      }
      queries++;
      checkerFor(
          (metric, msg) => problem(p, `${metric ? metric + ': ' : ''}${msg}`))
          .check(t.expr);
      const uid = String(dashboard.uid || path.basename(file, '.json'))
                      .replace(/[^a-zA-Z0-9_]/g, '_');
      exported.push({
        group: file,
        record:
            `${uid}:panel_${p.id}_${t.refId}`.replace(/[^a-zA-Z0-9_:]/g, '_'),
        expr: substituteGrafanaIntervals(t.expr),
      });
    }
  }
  // Overlapping panels: only among the top level, since the panels of a
  // collapsed row are placed as if it were expanded.
  const placed = (dashboard.panels || []).filter((p) => p.gridPos && [
    'x', 'y', 'w', 'h'
  ].every((k) => Number.isInteger(p.gridPos[k])));
  for (let i = 0; i < placed.length; i++) {
    for (let j = 0; j < i; j++) {
      const a = placed[i].gridPos;
      const b = placed[j].gridPos;
      if (a.x < b.x + b.w && b.x < a.x + a.w && a.y < b.y + b.h &&
          b.y < a.y + a.h) {
        problem(
            placed[i],
            `overlaps panel "${placed[j].title}" (id ${placed[j].id})`);
      }
    }
  }
  return {panels: panels.length, queries};
}

// ---------------------------------------------------------------------------

function usage(message) {
  if (message) process.stderr.write(`check_dashboards: ${message}\n`);
  process.stderr.write(
      'usage: check_dashboards.js [--dashboards DIR] [--rules FILE] ' +
      '[--metrics FILE] [--list | --export_rules FILE]\n');
  process.exit(2);
}

function relative(file) {
  const r = path.relative(process.cwd(), file);
  return r.startsWith('..') ? file : r;
}

function main(argv) {
  const opts = {
    dashboards: path.join(REPO_ROOT, 'deploy', 'grafana'),
    rules: path.join(REPO_ROOT, 'deploy', 'prometheus', 'alerts.yml'),
    metrics: path.join(REPO_ROOT, 'deploy', 'metrics.md'),
    list: false,
    export_rules: null,
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--list') {
      opts.list = true;
    } else if ([
                 '--dashboards', '--rules', '--metrics', '--export_rules'
               ].includes(a)) {
      if (i + 1 >= argv.length) usage(`${a} needs a value`);
      opts[a.slice(2)] = path.resolve(argv[++i]);
    } else if (a === '-h' || a === '--help') {
      usage();
    } else {
      usage(`unknown argument ${a}`);
    }
  }

  const problems = [];
  const names = new Set();
  let metrics;
  try {
    metrics = parseMetricsDoc(
        fs.readFileSync(opts.metrics, 'utf8'), relative(opts.metrics));
  } catch (e) {
    process.stderr.write(`check_dashboards: ${e.message}\n`);
    return 2;
  }
  const checkerFor = (report) => new QueryChecker(metrics, report, names);

  let files;
  try {
    files = fs.readdirSync(opts.dashboards)
                .filter((f) => f.endsWith('.json'))
                .sort()
                .map((f) => path.join(opts.dashboards, f));
  } catch (e) {
    process.stderr.write(`check_dashboards: ${e.message}\n`);
    return 2;
  }
  if (files.length === 0)
    problems.push(`${relative(opts.dashboards)}: no dashboards`);
  let panels = 0;
  let queries = 0;
  const exported = [];
  for (const f of files) {
    let dashboard;
    try {
      dashboard = JSON.parse(fs.readFileSync(f, 'utf8'));
    } catch (e) {
      problems.push(`${relative(f)}: not valid JSON: ${e.message}`);
      continue;
    }
    const counts =
        checkDashboard(relative(f), dashboard, problems, checkerFor, exported);
    panels += counts.panels;
    queries += counts.queries;
  }

  let rules = [];
  try {
    rules = readRuleExprs(
        fs.readFileSync(opts.rules, 'utf8'), relative(opts.rules));
  } catch (e) {
    problems.push(`check_dashboards: ${e.message}`);
  }
  if (rules.length === 0)
    problems.push(`${relative(opts.rules)}: no rule exprs found`);
  for (const r of rules) {
    checkerFor(
        (metric, msg) => problems.push(
            `${relative(opts.rules)}: ${r.name} (line ${r.line}): ` +
            `${metric ? metric + ': ' : ''}${msg}`))
        .check(r.expr);
  }

  if (opts.list) {
    names.delete('up');
    // One write, so that a reader that stops early (head) gets no EPIPE.
    const sorted = [...names].sort();
    process.stdout.write(sorted.map((n) => `${n}\n`).join(''));
    return 0;
  }
  if (opts.export_rules) {
    const groups = new Map();
    for (const e of exported) {
      if (!groups.has(e.group)) groups.set(e.group, []);
      groups.get(e.group).push(e);
    }
    let yaml =
        '# Generated by tests/observability/check_dashboards.js from the ' +
        'dashboards\' queries.\ngroups:\n';
    for (const [group, groupRules] of groups) {
      yaml += `  - name: ${JSON.stringify(group)}\n    rules:\n`;
      for (const r of groupRules) {
        // A JSON string is a valid YAML double-quoted scalar.
        const expr = JSON.stringify(r.expr);
        yaml += `      - record: ${r.record}\n        expr: ${expr}\n`;
      }
    }
    fs.writeFileSync(opts.export_rules, yaml);
  }
  for (const p of problems) process.stderr.write(`${p}\n`);
  if (problems.length) {
    process.stderr.write(`check_dashboards: ${problems.length} problem(s)\n`);
    return 1;
  }
  process.stdout.write(
      `check_dashboards: OK: ${files.length} dashboards, ${panels} panels, ` +
      `${queries} queries, ${rules.length} rules; ` +
      `${names.size} metric names\n`);
  return 0;
}

if (require.main === module) {
  process.exitCode = main(process.argv.slice(2));
} else {
  module.exports = {readRuleExprs};
}
