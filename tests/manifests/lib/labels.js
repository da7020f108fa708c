// The project's labels: every object and pod template carries
// app.kubernetes.io/name and app.kubernetes.io/part-of: moe-cluster; pod
// templates also app.kubernetes.io/component, and any component label is one
// of the cluster's components.
'use strict';

const { podLabels } = require('./objects');

const APP = 'moe-cluster';
const COMPONENTS = new Set(['gateway', 'router', 'prefill', 'decode', 'expert']);

function checkLabelSet(findings, obj, field, labels, needComponent) {
  for (const key of ['app.kubernetes.io/name', 'app.kubernetes.io/part-of']) {
    if (labels[key] !== APP) {
      findings.add(obj, `${field}["${key}"]`, `must be ${APP}, is ${labels[key]}`);
    }
  }
  const component = labels['app.kubernetes.io/component'];
  if (component === undefined ? needComponent : !COMPONENTS.has(component)) {
    findings.add(obj, `${field}["app.kubernetes.io/component"]`,
        `must be one of ${[...COMPONENTS].join(', ')}, is ${component}`);
  }
}

function checkLabels(set, findings) {
  for (const obj of set.objects) {
    checkLabelSet(findings, obj, 'metadata.labels',
        (obj.metadata && obj.metadata.labels) || {}, false);
  }
  for (const w of set.workloads()) {
    checkLabelSet(findings, w, 'spec.template.metadata.labels', podLabels(w), true);
  }
}

module.exports = { checkLabels };
