// The rendered objects of one kustomization, indexed for the checks, and
// the helpers every check shares: workload pod templates, label selector
// matching and error reporting.
'use strict';

// Kinds whose spec.template is a pod template.
const WORKLOAD_KINDS = new Set([
  'Deployment', 'StatefulSet', 'DaemonSet', 'ReplicaSet', 'Job',
]);

// Objects of kustomize output are namespaced by then; cluster-scoped ones
// (Namespace) have none.
function namespaceOf(obj) {
  return (obj.metadata && obj.metadata.namespace) || '';
}

// "Kind namespace/name" (or "Kind name"), how every message names an object.
function describe(obj) {
  const ns = namespaceOf(obj);
  const name = (obj.metadata && obj.metadata.name) || '<unnamed>';
  return `${obj.kind || '<no kind>'} ${ns ? `${ns}/` : ''}${name}`;
}

// Collects failures as "Kind ns/name: field: message" lines.
class Findings {
  constructor() { this.lines = []; }
  add(obj, field, message) {
    this.lines.push(`${describe(obj)}: ${field}: ${message}`);
  }
}

// True when `labels` satisfy a Kubernetes LabelSelector (matchLabels and
// matchExpressions). An empty selector matches everything.
function selectorMatches(selector, labels) {
  const l = labels || {};
  const sel = selector || {};
  for (const [k, v] of Object.entries(sel.matchLabels || {})) {
    if (l[k] !== v) return false;
  }
  for (const e of sel.matchExpressions || []) {
    const has = Object.prototype.hasOwnProperty.call(l, e.key);
    const values = e.values || [];
    switch (e.operator) {
      case 'In': if (!has || !values.includes(l[e.key])) return false; break;
      case 'NotIn': if (has && values.includes(l[e.key])) return false; break;
      case 'Exists': if (!has) return false; break;
      case 'DoesNotExist': if (has) return false; break;
      default: return false;
    }
  }
  return true;
}

// A Service's selector is a plain map.
function mapSelectorMatches(map, labels) {
  return selectorMatches({ matchLabels: map }, labels);
}

class ObjectSet {
  constructor(objects) {
    this.objects = objects;
  }

  ofKind(kind) {
    return this.objects.filter((o) => o.kind === kind);
  }

  find(kind, namespace, name) {
    return this.objects.find((o) => o.kind === kind &&
        namespaceOf(o) === namespace && o.metadata.name === name);
  }

  workloads() {
    return this.objects.filter((o) => WORKLOAD_KINDS.has(o.kind) &&
        o.spec && o.spec.template);
  }

  // Workloads in `namespace` whose pod template labels satisfy `matches`.
  workloadsWhere(namespace, matches) {
    return this.workloads().filter((w) => namespaceOf(w) === namespace &&
        matches(podLabels(w)));
  }
}

function podLabels(workload) {
  const t = workload.spec.template;
  return (t.metadata && t.metadata.labels) || {};
}

function podSpec(workload) {
  return workload.spec.template.spec || {};
}

// [{container, field}] for the init and regular containers of a workload;
// `field` is the container's path for messages.
function containersOf(workload) {
  const spec = podSpec(workload);
  const out = [];
  for (const list of ['initContainers', 'containers']) {
    (spec[list] || []).forEach((c, i) => out.push({
      container: c,
      init: list === 'initContainers',
      field: `spec.template.spec.${list}[${i}] (${c.name})`,
    }));
  }
  return out;
}

// Port names and numbers the workload's containers declare.
function declaredPorts(workload) {
  const names = new Set();
  const numbers = new Set();
  for (const { container } of containersOf(workload)) {
    for (const p of container.ports || []) {
      if (p.name) names.add(p.name);
      numbers.add(p.containerPort);
    }
  }
  return { names, numbers };
}

// Whether a port reference (a name, or a number) names a declared port.
function portDeclared(ports, ref) {
  return typeof ref === 'string' ? ports.names.has(ref) : ports.numbers.has(ref);
}

module.exports = {
  Findings, ObjectSet, containersOf, declaredPorts, describe,
  mapSelectorMatches, namespaceOf, podLabels, podSpec, portDeclared,
  selectorMatches,
};
