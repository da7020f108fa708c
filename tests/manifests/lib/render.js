// Renders a kustomization with `kubectl kustomize` and parses the output.
'use strict';

const { spawnSync } = require('child_process');

// Returns {objects} or {error}: the parsed documents of
// `kubectl kustomize DIR`, or why there are none. `yaml` is js-yaml.
function render(kubectl, dir, yaml) {
  const run = spawnSync(kubectl, ['kustomize', dir], {
    encoding: 'utf8',
    maxBuffer: 64 * 1024 * 1024,
  });
  if (run.error) return { error: `cannot run ${kubectl}: ${run.error.message}` };
  if (run.status !== 0) {
    return { error: `kubectl kustomize ${dir} failed (exit ${run.status}):\n${run.stderr.trim()}` };
  }
  let docs;
  try {
    docs = yaml.loadAll(run.stdout);
  } catch (e) {
    return { error: `output of kubectl kustomize ${dir} is not YAML: ${e.message}` };
  }
  return { objects: docs.filter((d) => d !== null && d !== undefined) };
}

module.exports = { render };
