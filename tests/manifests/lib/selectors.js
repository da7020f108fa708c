// Checks that objects pointing at pods or workloads find them: Services,
// StatefulSet governing Services, PodDisruptionBudgets, PodMonitors,
// NetworkPolicies and HorizontalPodAutoscalers.
'use strict';

const {
  declaredPorts, describe, mapSelectorMatches, namespaceOf, podLabels,
  portDeclared, selectorMatches,
} = require('./objects');

function names(workloads) {
  return workloads.map(describe).join(', ');
}

function checkServices(set, findings) {
  for (const svc of set.ofKind('Service')) {
    const spec = svc.spec || {};
    if (spec.type === 'ExternalName') continue;
    const selector = spec.selector || {};
    if (Object.keys(selector).length === 0) {
      findings.add(svc, 'spec.selector', 'missing (the Service would select no pods)');
      continue;
    }
    const targets = set.workloadsWhere(namespaceOf(svc),
        (labels) => mapSelectorMatches(selector, labels));
    if (targets.length === 0) {
      findings.add(svc, 'spec.selector',
          `${JSON.stringify(selector)} matches the pod template of no workload`);
      continue;
    }
    (spec.ports || []).forEach((p, i) => {
      const target = p.targetPort ?? p.port;
      for (const w of targets) {
        if (!portDeclared(declaredPorts(w), target)) {
          findings.add(svc, `spec.ports[${i}].targetPort`,
              `${JSON.stringify(target)} is not a container port of ${describe(w)}`);
        }
      }
    });
  }
}

// A StatefulSet's pods get DNS names only through a headless Service that
// selects them.
function checkGoverningServices(set, findings) {
  for (const sts of set.ofKind('StatefulSet')) {
    const name = sts.spec.serviceName;
    if (!name) {
      findings.add(sts, 'spec.serviceName', 'missing');
      continue;
    }
    const svc = set.find('Service', namespaceOf(sts), name);
    if (!svc) {
      findings.add(sts, 'spec.serviceName', `Service ${name} does not exist`);
    } else if (svc.spec.clusterIP !== 'None') {
      findings.add(sts, 'spec.serviceName', `Service ${name} is not headless (clusterIP: None)`);
    } else if (!mapSelectorMatches(svc.spec.selector || {}, podLabels(sts))) {
      findings.add(sts, 'spec.serviceName', `Service ${name} does not select this StatefulSet's pods`);
    }
  }
}

// Workloads own their pods only if their selector matches their template.
function checkWorkloadSelectors(set, findings) {
  for (const w of set.workloads()) {
    if (w.kind === 'Job') continue;
    if (!selectorMatches(w.spec.selector, podLabels(w))) {
      findings.add(w, 'spec.selector', 'does not match the pod template labels');
    }
  }
}

function checkDisruptionBudgets(set, findings) {
  for (const pdb of set.ofKind('PodDisruptionBudget')) {
    const targets = set.workloadsWhere(namespaceOf(pdb),
        (labels) => selectorMatches(pdb.spec.selector, labels));
    if (targets.length === 0) {
      findings.add(pdb, 'spec.selector', 'matches the pods of no workload');
    }
  }
}

// Namespaces a PodMonitor looks in: its own unless namespaceSelector says
// otherwise (any: true, or matchNames).
function podMonitorNamespaces(pm) {
  const sel = pm.spec.namespaceSelector || {};
  if (sel.any) return null;
  if (sel.matchNames && sel.matchNames.length) return new Set(sel.matchNames);
  return new Set([namespaceOf(pm)]);
}

function checkPodMonitors(set, findings) {
  for (const pm of set.ofKind('PodMonitor')) {
    const namespaces = podMonitorNamespaces(pm);
    const targets = set.workloads().filter((w) =>
      (namespaces === null || namespaces.has(namespaceOf(w))) &&
      selectorMatches(pm.spec.selector, podLabels(w)));
    if (targets.length === 0) {
      findings.add(pm, 'spec.selector', 'matches the pods of no workload');
      continue;
    }
    (pm.spec.podMetricsEndpoints || []).forEach((ep, i) => {
      const port = ep.port ?? ep.targetPort;
      if (port === undefined) {
        findings.add(pm, `spec.podMetricsEndpoints[${i}].port`, 'missing');
        return;
      }
      for (const w of targets) {
        if (!portDeclared(declaredPorts(w), port)) {
          findings.add(pm, `spec.podMetricsEndpoints[${i}].port`,
              `${JSON.stringify(port)} is not a container port of ${describe(w)}`);
        }
      }
    });
  }
}

function checkNetworkPolicies(set, findings) {
  for (const np of set.ofKind('NetworkPolicy')) {
    const ns = namespaceOf(np);
    const selected = set.workloadsWhere(ns,
        (labels) => selectorMatches(np.spec.podSelector, labels));
    if (selected.length === 0) {
      findings.add(np, 'spec.podSelector', 'matches the pods of no workload');
      continue;
    }
    (np.spec.ingress || []).forEach((rule, i) => {
      (rule.ports || []).forEach((p, j) => {
        if (typeof p.port !== 'string') return;
        const missing = selected.filter((w) => !declaredPorts(w).names.has(p.port));
        if (missing.length) {
          findings.add(np, `spec.ingress[${i}].ports[${j}].port`,
              `${p.port} is not a container port of ${names(missing)}`);
        }
      });
      (rule.from || []).forEach((peer, j) => {
        // Peers in other namespaces (namespaceSelector) are outside this
        // output; peers in this one must exist.
        if (!peer.podSelector || peer.namespaceSelector) return;
        const sources = set.workloadsWhere(ns,
            (labels) => selectorMatches(peer.podSelector, labels));
        if (sources.length === 0) {
          findings.add(np, `spec.ingress[${i}].from[${j}].podSelector`,
              'matches the pods of no workload');
        }
      });
    });
  }
}

function checkAutoscalers(set, findings) {
  for (const hpa of set.ofKind('HorizontalPodAutoscaler')) {
    const ref = hpa.spec.scaleTargetRef;
    const target = set.find(ref.kind, namespaceOf(hpa), ref.name);
    if (!target || target.apiVersion !== ref.apiVersion) {
      findings.add(hpa, 'spec.scaleTargetRef',
          `${ref.apiVersion} ${ref.kind} ${ref.name} does not exist`);
    }
    if ((hpa.spec.minReplicas ?? 1) > hpa.spec.maxReplicas) {
      findings.add(hpa, 'spec.minReplicas', 'greater than maxReplicas');
    }
  }
}

function checkSelectors(set, findings) {
  checkWorkloadSelectors(set, findings);
  checkServices(set, findings);
  checkGoverningServices(set, findings);
  checkDisruptionBudgets(set, findings);
  checkPodMonitors(set, findings);
  checkNetworkPolicies(set, findings);
  checkAutoscalers(set, findings);
}

module.exports = { checkSelectors };
