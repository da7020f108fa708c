// Every container, init containers included, runs under the "restricted"
// Pod Security Standard plus a read-only root filesystem, as the image's
// non-root user: the effective settings (container over pod) must be
//   runAsNonRoot: true, runAsUser: 65532, allowPrivilegeEscalation: false,
//   capabilities.drop: [ALL] (nothing added), privileged not true,
//   seccompProfile.type: RuntimeDefault, readOnlyRootFilesystem: true.
'use strict';

const { containersOf, podSpec } = require('./objects');

const USER = 65532;

function checkContainer(findings, w, pod, container, field) {
  const c = container.securityContext || {};
  const at = `${field}.securityContext`;
  const effective = (key) => (c[key] !== undefined ? c[key] : pod[key]);

  if (effective('runAsNonRoot') !== true) {
    findings.add(w, `${at}.runAsNonRoot`, 'must be true');
  }
  if (effective('runAsUser') !== USER) {
    findings.add(w, `${at}.runAsUser`, `must be ${USER}, is ${effective('runAsUser')}`);
  }
  if (c.allowPrivilegeEscalation !== false) {
    findings.add(w, `${at}.allowPrivilegeEscalation`, 'must be false');
  }
  if (c.privileged === true) {
    findings.add(w, `${at}.privileged`, 'must not be true');
  }
  const caps = c.capabilities || {};
  if (!(caps.drop || []).includes('ALL')) {
    findings.add(w, `${at}.capabilities.drop`, 'must include ALL');
  }
  if ((caps.add || []).length) {
    findings.add(w, `${at}.capabilities.add`, `must be empty, is ${caps.add.join(',')}`);
  }
  const seccomp = effective('seccompProfile');
  if (!seccomp || seccomp.type !== 'RuntimeDefault') {
    findings.add(w, `${at}.seccompProfile.type`, 'must be RuntimeDefault');
  }
  if (c.readOnlyRootFilesystem !== true) {
    findings.add(w, `${at}.readOnlyRootFilesystem`, 'must be true');
  }
}

function checkSecurity(set, findings) {
  for (const w of set.workloads()) {
    const pod = podSpec(w).securityContext || {};
    for (const { container, field } of containersOf(w)) {
      checkContainer(findings, w, pod, container, field);
    }
  }
}

module.exports = { checkSecurity };
