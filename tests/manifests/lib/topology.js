// Checks the moe-topology ConfigMap against the workloads it describes
// (contract in deploy/k8s/base/topology.yaml): the expert server count is
// the expert StatefulSet's replicas, and each address list names exactly
// the pods of its StatefulSet, in ordinal order, through the headless
// Service, on its grpc port.
'use strict';

const { describe, mapSelectorMatches, namespaceOf, podLabels } = require('./objects');

const TOPOLOGY = 'moe-topology';
const COMPONENT = 'app.kubernetes.io/component';
const LISTS = [
  { key: 'expert_server_addresses', component: 'expert' },
  { key: 'prefill_addresses', component: 'prefill' },
  { key: 'decode_addresses', component: 'decode' },
];
const REQUIRED_KEYS = [
  'expert_server_count', 'expert_replicas', 'router_address',
  ...LISTS.map((l) => l.key),
];

function splitList(value) {
  return String(value).split(',').map((s) => s.trim()).filter((s) => s !== '');
}

// The one StatefulSet of `component` in `ns`, or a reason there is none.
function statefulSetOf(set, ns, component) {
  const found = set.ofKind('StatefulSet').filter((s) =>
    namespaceOf(s) === ns && podLabels(s)[COMPONENT] === component);
  if (found.length === 1) return { sts: found[0] };
  return { error: `${found.length} StatefulSets with ${COMPONENT}: ${component} (want 1)` };
}

function grpcPort(set, sts) {
  const svc = set.find('Service', namespaceOf(sts), sts.spec.serviceName);
  const port = svc && (svc.spec.ports || []).find((p) => p.name === 'grpc');
  return port ? port.port : undefined;
}

// "name-0.service:port,..." for every pod of the StatefulSet.
function expectedAddresses(set, sts) {
  const replicas = sts.spec.replicas ?? 1;
  const port = grpcPort(set, sts);
  const out = [];
  for (let i = 0; i < replicas; i++) {
    out.push(`${sts.metadata.name}-${i}.${sts.spec.serviceName}:${port}`);
  }
  return out;
}

function checkLists(set, findings, cm, data) {
  const ns = namespaceOf(cm);
  for (const { key, component } of LISTS) {
    const { sts, error } = statefulSetOf(set, ns, component);
    if (error) {
      findings.add(cm, `data.${key}`, error);
      continue;
    }
    const want = expectedAddresses(set, sts);
    const got = splitList(data[key]);
    if (want.join(',') !== got.join(',')) {
      findings.add(cm, `data.${key}`,
          `lists ${got.length} address(es) [${got.join(',')}] but ${describe(sts)} ` +
          `has ${want.length} replica(s) [${want.join(',')}]`);
    }
    for (const hpa of set.ofKind('HorizontalPodAutoscaler')) {
      const ref = hpa.spec.scaleTargetRef;
      if (namespaceOf(hpa) !== ns || ref.kind !== 'StatefulSet' ||
          ref.name !== sts.metadata.name) continue;
      if ((hpa.spec.minReplicas ?? 1) !== got.length) {
        findings.add(hpa, 'spec.minReplicas',
            `${hpa.spec.minReplicas ?? 1} differs from the ${got.length} ` +
            `address(es) of ${TOPOLOGY} data.${key}: scaling below the list ` +
            'would remove servers the gateway still uses');
      }
    }
  }
}

function checkExpertCounts(set, findings, cm, data) {
  const count = Number(data.expert_server_count);
  const replicas = Number(data.expert_replicas);
  if (!Number.isInteger(count) || count < 1) {
    findings.add(cm, 'data.expert_server_count', `not a positive integer: ${data.expert_server_count}`);
    return;
  }
  if (!Number.isInteger(replicas) || replicas < 1 || replicas > count) {
    findings.add(cm, 'data.expert_replicas',
        `${data.expert_replicas} is not an integer in 1..expert_server_count (${count})`);
  }
  const { sts } = statefulSetOf(set, namespaceOf(cm), 'expert');
  if (sts && (sts.spec.replicas ?? 1) !== count) {
    findings.add(cm, 'data.expert_server_count',
        `${count} differs from the replicas of ${describe(sts)} (${sts.spec.replicas ?? 1})`);
  }
}

function checkRouterAddress(set, findings, cm, data) {
  const [host, port] = String(data.router_address).split(':');
  const ns = namespaceOf(cm);
  const svc = set.find('Service', ns, host);
  if (!svc) {
    findings.add(cm, 'data.router_address', `Service ${host} does not exist`);
    return;
  }
  if (!(svc.spec.ports || []).some((p) => p.port === Number(port))) {
    findings.add(cm, 'data.router_address', `Service ${host} has no port ${port}`);
  }
  const routers = set.workloadsWhere(ns, (labels) =>
    labels[COMPONENT] === 'router' && mapSelectorMatches(svc.spec.selector || {}, labels));
  if (routers.length === 0) {
    findings.add(cm, 'data.router_address', `Service ${host} selects no router pods`);
  }
}

function checkTopology(set, findings) {
  for (const cm of set.ofKind('ConfigMap')) {
    if (cm.metadata.name !== TOPOLOGY) continue;
    const data = cm.data || {};
    const missing = REQUIRED_KEYS.filter((k) => data[k] === undefined);
    if (missing.length) {
      findings.add(cm, 'data', `missing key(s) ${missing.join(', ')}`);
      continue;
    }
    checkExpertCounts(set, findings, cm, data);
    checkLists(set, findings, cm, data);
    checkRouterAddress(set, findings, cm, data);
  }
}

module.exports = { checkTopology };
