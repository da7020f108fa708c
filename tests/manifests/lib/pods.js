// Checks inside each workload's pod template: what its containers refer to
// (ConfigMap keys, environment variables, ports, volumes, claims) exists,
// and the servers' flags agree with the pod around them (ports, drain time,
// the model mount).
'use strict';

const { containersOf, namespaceOf, podSpec } = require('./objects');

const MODEL_PATH = '/models/model';
const PROBES = ['startupProbe', 'readinessProbe', 'livenessProbe'];

// $(VAR) references the kubelet expands in command and args ($$(VAR) is an
// escaped literal).
const VAR_REF = /(?<!\$)\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g;

// `--name=value` of a container's args, or undefined.
function flagValue(container, name) {
  const prefix = `--${name}=`;
  const arg = (container.args || []).find((a) => String(a).startsWith(prefix));
  return arg === undefined ? undefined : String(arg).slice(prefix.length);
}

function checkConfigMapRef(set, findings, w, field, ref, keys) {
  if (ref.optional) return;
  const cm = set.find('ConfigMap', namespaceOf(w), ref.name);
  if (!cm) {
    findings.add(w, field, `ConfigMap ${ref.name} does not exist`);
    return;
  }
  const present = { ...(cm.data || {}), ...(cm.binaryData || {}) };
  for (const key of keys) {
    if (!Object.prototype.hasOwnProperty.call(present, key)) {
      findings.add(w, field, `ConfigMap ${ref.name} has no key ${key}`);
    }
  }
}

// Variables the kubelet defines for the container: env, and the keys of
// envFrom ConfigMaps (with their prefix).
function definedVariables(set, w, container) {
  const vars = new Set((container.env || []).map((e) => e.name));
  for (const from of container.envFrom || []) {
    if (!from.configMapRef) continue;
    const cm = set.find('ConfigMap', namespaceOf(w), from.configMapRef.name);
    for (const key of Object.keys((cm && cm.data) || {})) {
      vars.add(`${from.prefix || ''}${key}`);
    }
  }
  return vars;
}

function checkEnvironment(set, findings, w, container, field) {
  // Named rather than numbered: patches reorder env lists.
  for (const e of container.env || []) {
    const ref = e.valueFrom && e.valueFrom.configMapKeyRef;
    if (ref) {
      checkConfigMapRef(set, findings, w,
          `${field}.env[${e.name}].valueFrom.configMapKeyRef`, ref, [ref.key]);
    }
  }
  (container.envFrom || []).forEach((from, i) => {
    if (from.configMapRef) {
      checkConfigMapRef(set, findings, w, `${field}.envFrom[${i}].configMapRef`,
          from.configMapRef, []);
    }
  });
  const vars = definedVariables(set, w, container);
  for (const list of ['command', 'args']) {
    (container[list] || []).forEach((arg, i) => {
      for (const m of String(arg).matchAll(VAR_REF)) {
        if (!vars.has(m[1])) {
          findings.add(w, `${field}.${list}[${i}]`,
              `$(${m[1]}) names no environment variable of the container ` +
              '(the kubelet would pass it literally)');
        }
      }
    });
  }
}

function probePort(probe) {
  if (probe.grpc) return probe.grpc.port;
  if (probe.httpGet) return probe.httpGet.port;
  if (probe.tcpSocket) return probe.tcpSocket.port;
  return undefined;
}

function checkProbes(findings, w, container, field, init) {
  const own = { names: new Set(), numbers: new Set() };
  for (const p of container.ports || []) {
    if (p.name) own.names.add(p.name);
    own.numbers.add(p.containerPort);
  }
  for (const kind of PROBES) {
    const probe = container[kind];
    if (!probe) {
      if (!init) findings.add(w, `${field}.${kind}`, 'missing');
      continue;
    }
    const port = probePort(probe);
    if (port === undefined) continue;  // exec probes have no port
    const ok = typeof port === 'string' ? own.names.has(port) : own.numbers.has(port);
    if (!ok) {
      findings.add(w, `${field}.${kind}`,
          `port ${port} is not a port the container declares`);
    }
  }
}

function checkResources(findings, w, container, field) {
  const requests = (container.resources && container.resources.requests) || {};
  for (const r of ['cpu', 'memory']) {
    if (requests[r] === undefined) {
      findings.add(w, `${field}.resources.requests.${r}`, 'missing');
    }
  }
}

function checkVolumes(set, findings, w) {
  const spec = podSpec(w);
  const volumes = new Map((spec.volumes || []).map((v) => [v.name, v]));
  (spec.volumes || []).forEach((v, i) => {
    const field = `spec.template.spec.volumes[${i}] (${v.name})`;
    if (v.persistentVolumeClaim) {
      const claim = v.persistentVolumeClaim.claimName;
      if (!set.find('PersistentVolumeClaim', namespaceOf(w), claim)) {
        findings.add(w, `${field}.persistentVolumeClaim.claimName`,
            `PersistentVolumeClaim ${claim} does not exist`);
      }
    }
    if (v.configMap) {
      checkConfigMapRef(set, findings, w, `${field}.configMap`,
          v.configMap, (v.configMap.items || []).map((it) => it.key));
    }
  });
  for (const { container, field } of containersOf(w)) {
    (container.volumeMounts || []).forEach((m, i) => {
      if (!volumes.has(m.name)) {
        findings.add(w, `${field}.volumeMounts[${i}]`, `volume ${m.name} does not exist`);
      }
    });
  }
}

// Every server reads the checkpoint from MODEL_PATH, read-only.
function checkModelMount(findings, w, container, field) {
  const mount = (container.volumeMounts || []).find((m) => m.mountPath === MODEL_PATH);
  if (!mount) {
    findings.add(w, `${field}.volumeMounts`, `nothing mounted at ${MODEL_PATH}`);
  } else if (!mount.readOnly) {
    findings.add(w, `${field}.volumeMounts (${mount.name})`,
        `${MODEL_PATH} must be mounted readOnly`);
  }
}

// --listen and --metrics_port must serve on the ports named grpc and
// metrics, on all interfaces.
function checkServerFlags(findings, w, container, field) {
  const byName = new Map((container.ports || []).map((p) => [p.name, p.containerPort]));
  const listen = flagValue(container, 'listen');
  if (listen !== undefined) {
    const colon = listen.lastIndexOf(':');
    const host = listen.slice(0, colon);
    const port = Number(listen.slice(colon + 1));
    if (host === '127.0.0.1' || host === 'localhost' || host === '[::1]') {
      findings.add(w, `${field}.args`, `--listen=${listen} is loopback only`);
    }
    if (byName.get('grpc') !== port) {
      findings.add(w, `${field}.ports`,
          `no port named grpc with containerPort ${port} (--listen=${listen})`);
    }
  }
  const metrics = flagValue(container, 'metrics_port');
  if (metrics !== undefined && byName.get('metrics') !== Number(metrics)) {
    findings.add(w, `${field}.ports`,
        `no port named metrics with containerPort ${metrics} (--metrics_port=${metrics})`);
  }
}

// Seconds a preStop hook delays SIGTERM: `sleep N` (exec) or the sleep action.
function preStopSeconds(container) {
  const hook = container.lifecycle && container.lifecycle.preStop;
  if (!hook) return 0;
  if (hook.sleep) return Number(hook.sleep.seconds) || 0;
  const cmd = (hook.exec && hook.exec.command) || [];
  if (cmd.length === 2 && /(^|\/)sleep$/.test(cmd[0])) return Number(cmd[1]) || 0;
  return 0;
}

// The kubelet kills the container terminationGracePeriodSeconds after the
// preStop hook starts; the server's drain must fit in what is left.
function checkGracePeriod(findings, w, container, field) {
  const drain = flagValue(container, 'drain_seconds');
  if (drain === undefined) return;
  const grace = podSpec(w).terminationGracePeriodSeconds ?? 30;
  const needed = Number(drain) + preStopSeconds(container);
  if (!(grace > needed)) {
    findings.add(w, 'spec.template.spec.terminationGracePeriodSeconds',
        `${grace} s is not longer than ${container.name}'s preStop + ` +
        `--drain_seconds (${needed} s)`);
  }
}

function checkPods(set, findings) {
  for (const w of set.workloads()) {
    checkVolumes(set, findings, w);
    for (const { container, field, init } of containersOf(w)) {
      checkEnvironment(set, findings, w, container, field);
      checkProbes(findings, w, container, field, init);
      checkResources(findings, w, container, field);
      if (init) continue;
      checkModelMount(findings, w, container, field);
      checkServerFlags(findings, w, container, field);
      checkGracePeriod(findings, w, container, field);
    }
  }
}

module.exports = { checkPods, flagValue };
