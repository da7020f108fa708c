// Validates each object against the OpenAPI schema of its apiVersion and
// kind, with the model classes of kubernetes-models (Kubernetes' own types)
// and @kubernetes-models/prometheus-operator (PodMonitor and friends).
//
// The schemas check types, formats, enums and required fields; they do not
// reject unknown fields, which is why the other checks look for the fields
// this project relies on (probes, securityContext, ...) explicitly.
'use strict';

// The package path that holds the models of an apiVersion, or null.
function modulePathFor(apiVersion) {
  if (typeof apiVersion !== 'string' || apiVersion === '') return null;
  if (apiVersion.startsWith('monitoring.coreos.com/')) {
    return `@kubernetes-models/prometheus-operator/${apiVersion}`;
  }
  // Core group ("v1") or "group/version".
  return `kubernetes-models/${apiVersion}`;
}

// The model class of apiVersion/kind, or null. `req` resolves packages from
// the directory setup.sh installed them into.
function modelClass(req, apiVersion, kind) {
  const path = modulePathFor(apiVersion);
  if (path === null) return null;
  let mod;
  try {
    mod = req(path);
  } catch (e) {
    if (e.code === 'MODULE_NOT_FOUND' ||
        e.code === 'ERR_PACKAGE_PATH_NOT_EXPORTED') return null;
    throw e;
  }
  const cls = mod[kind];
  if (typeof cls !== 'function') return null;
  // Nested types (Container, Probe, ...) are exported too; only top-level
  // kinds fill in their own apiVersion and kind.
  const probe = new cls({});
  return probe.kind === kind && probe.apiVersion === apiVersion ? cls : null;
}

function formatError(e) {
  return `${e.instancePath || '/'} ${e.message}` +
      (e.params && e.params.allowedValues
        ? ` (${e.params.allowedValues.join(', ')})` : '');
}

// Adds a finding per object without a schema or failing it.
function checkSchemas(req, set, findings) {
  for (const obj of set.objects) {
    const cls = modelClass(req, obj.apiVersion, obj.kind);
    if (cls === null) {
      findings.add(obj, 'apiVersion/kind',
          `no schema for ${obj.apiVersion}/${obj.kind} (unknown kind)`);
      continue;
    }
    try {
      new cls(obj).validate();
    } catch (e) {
      const details = (e.errors || []).map(formatError);
      findings.add(obj, 'schema', details.length
        ? details.join('; ') : e.message);
    }
  }
}

module.exports = { checkSchemas };
