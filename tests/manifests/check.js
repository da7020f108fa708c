#!/usr/bin/env node
// Checks the Kubernetes manifests of deploy/k8s: renders each kustomization
// with `kubectl kustomize`, validates every object against its schema
// (kubernetes-models) and checks the references between objects (see lib/).
//
//   node tests/manifests/check.js --node_dir DIR [--kubectl PATH]
//       [--root REPO] [KUSTOMIZATION_DIR ...]
//
// --node_dir: where tests/manifests/setup.sh installed the node packages.
// Without directories: deploy/k8s/base and every deploy/k8s/overlays/*.
// Prints PASS or FAIL per kustomization, and each failure as
// "Kind namespace/name: field: message". Exit codes: 0 all pass, 1 a check
// failed, 2 bad usage or packages missing.
'use strict';

const fs = require('fs');
const path = require('path');
const { createRequire } = require('module');

const { Findings, ObjectSet } = require('./lib/objects');
const { render } = require('./lib/render');
const { checkSchemas } = require('./lib/schema');
const { checkSelectors } = require('./lib/selectors');
const { checkPods } = require('./lib/pods');
const { checkTopology } = require('./lib/topology');
const { checkSecurity } = require('./lib/security');
const { checkLabels } = require('./lib/labels');

function usage(message) {
  console.error(`check.js: ${message}\nusage: check.js --node_dir DIR ` +
      '[--kubectl PATH] [--root REPO] [KUSTOMIZATION_DIR ...]');
  process.exit(2);
}

function parseArgs(argv) {
  const opts = {
    kubectl: 'kubectl',
    root: path.resolve(__dirname, '..', '..'),
    nodeDir: null,
    dirs: [],
  };
  for (let i = 0; i < argv.length; i++) {
    const [flag, inline] = argv[i].split(/=(.*)/s, 2);
    const value = () => (inline !== undefined ? inline : argv[++i]);
    if (flag === '--node_dir') opts.nodeDir = value();
    else if (flag === '--kubectl') opts.kubectl = value();
    else if (flag === '--root') opts.root = path.resolve(value());
    else if (flag.startsWith('--')) usage(`unknown flag ${flag}`);
    else opts.dirs.push(path.resolve(argv[i]));
  }
  if (!opts.nodeDir) usage('--node_dir is required');
  return opts;
}

function defaultDirs(root) {
  const overlays = path.join(root, 'deploy', 'k8s', 'overlays');
  return [path.join(root, 'deploy', 'k8s', 'base')].concat(
      fs.readdirSync(overlays).sort().map((d) => path.join(overlays, d))
          .filter((d) => fs.existsSync(path.join(d, 'kustomization.yaml'))));
}

// Failure lines for one kustomization, or the reason it did not render.
function checkKustomization(opts, req, yaml, dir) {
  const { objects, error } = render(opts.kubectl, dir, yaml);
  if (error) return { count: 0, lines: [error] };
  const set = new ObjectSet(objects);
  const findings = new Findings();
  checkSchemas(req, set, findings);
  // Objects failing their schema may lack what a later check reads; such a
  // crash is reported with the schema errors rather than hiding them.
  for (const check of [checkLabels, checkSecurity, checkPods, checkSelectors,
    checkTopology]) {
    try {
      check(set, findings);
    } catch (e) {
      findings.lines.push(`${check.name} stopped: ${e.stack}`);
    }
  }
  return { count: objects.length, lines: findings.lines };
}

function main() {
  const opts = parseArgs(process.argv.slice(2));
  const req = createRequire(path.join(path.resolve(opts.nodeDir), 'package.json'));
  let yaml;
  try {
    yaml = req('js-yaml');
  } catch (e) {
    console.error(`check.js: node packages missing in ${opts.nodeDir} ` +
        `(run tests/manifests/setup.sh ${opts.nodeDir}): ${e.message}`);
    process.exit(2);
  }
  const dirs = opts.dirs.length ? opts.dirs : defaultDirs(opts.root);
  let failed = 0;
  for (const dir of dirs) {
    const shown = path.relative(opts.root, dir) || '.';
    const { count, lines } = checkKustomization(opts, req, yaml, dir);
    if (lines.length === 0) {
      console.log(`PASS ${shown} (${count} objects)`);
      continue;
    }
    failed++;
    console.log(`FAIL ${shown}: ${lines.length} problem(s)`);
    for (const line of lines) console.log(`  ${shown}: ${line}`);
  }
  process.exit(failed ? 1 : 0);
}

main();
