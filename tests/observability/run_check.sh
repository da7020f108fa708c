#!/usr/bin/env bash
# Runs one check of the observability configuration (registered with CTest by
# tests/observability_tests.cmake):
#
#   run_check.sh prometheus_config   promtool check config on a copy of
#                                    deploy/prometheus with sample targets
#   run_check.sh alert_rules         promtool check rules --lint=all
#   run_check.sh alert_rules_unit    promtool test rules alerts_test.yml
#   run_check.sh dashboards          check_dashboards.js, then promtool parses
#                                    every dashboard query
#   run_check.sh dashboards_broken   check_dashboards.js must reject the
#                                    fixtures in broken/ with the messages
#                                    listed in broken/expected.txt
#   run_check.sh promql_unit         unit tests of promql_check.js
#
# Exits 77 (CTest's SKIP_RETURN_CODE) when promtool or node is missing; the
# PROMTOOL and NODE environment variables override the ones on PATH.
set -euo pipefail

readonly kSkip=77
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "${here}/../.." && pwd)"
prom_dir="${root}/deploy/prometheus"
checker="${here}/check_dashboards.js"

need() {  # need VAR TOOL: sets VAR to TOOL's path, or skips the test.
  local var="$1" tool="$2" found="${!1:-}"
  [[ -n "${found}" ]] || found="$(command -v "${tool}" || true)"
  if [[ -z "${found}" || ! -x "${found}" ]]; then
    echo "SKIPPED: ${tool} not found"
    exit "${kSkip}"
  fi
  printf -v "${var}" '%s' "${found}"
}

tmp=""
make_tmp() {
  tmp="$(mktemp -d "${TMPDIR:-/tmp}/moe-observability.XXXXXX")"
  trap 'rm -rf "${tmp}"' EXIT
}

# Target files as `moe-cluster up --prometheus_targets_dir` writes them.
write_sample_targets() {
  local dir="$1"
  mkdir -p "${dir}"
  cat >"${dir}/gateway.json" <<'JSON'
[{"targets": ["127.0.0.1:9401"], "labels": {"server": "gateway"}}]
JSON
  cat >"${dir}/attention.json" <<'JSON'
[
  {"targets": ["127.0.0.1:9402"], "labels": {"server": "prefill-0", "role": "prefill"}},
  {"targets": ["127.0.0.1:9403"], "labels": {"server": "decode-0", "role": "decode"}}
]
JSON
  cat >"${dir}/router.json" <<'JSON'
[{"targets": ["127.0.0.1:9404"], "labels": {"server": "router"}}]
JSON
  cat >"${dir}/expert.json" <<'JSON'
[
  {"targets": ["127.0.0.1:9405"], "labels": {"server": "expert-0"}},
  {"targets": ["127.0.0.1:9406"], "labels": {"server": "expert-1"}}
]
JSON
}

# Runs a command, shows its output, and fails if it fails or warns.
run_no_warnings() {
  local out rc=0
  out="$("$@" 2>&1)" || rc=$?
  printf '%s\n' "${out}"
  if (( rc != 0 )); then
    echo "FAILED (exit ${rc}): $*"
    exit 1
  fi
  if grep -q 'WARNING' <<<"${out}"; then
    echo "FAILED (warnings): $*"
    exit 1
  fi
}

case "${1:-}" in
  prometheus_config)
    need PROMTOOL promtool
    # The targets directory is written by the launcher, not shipped: check a
    # copy with sample target files so that promtool validates them too.
    make_tmp
    cp -R "${prom_dir}/." "${tmp}/"
    rm -rf "${tmp}/targets"
    write_sample_targets "${tmp}/targets"
    run_no_warnings "${PROMTOOL}" check config --lint=all "${tmp}/prometheus.yml"
    ;;
  alert_rules)
    need PROMTOOL promtool
    run_no_warnings "${PROMTOOL}" check rules --lint=all --lint-fatal \
      "${prom_dir}/alerts.yml"
    ;;
  alert_rules_unit)
    need PROMTOOL promtool
    cd "${prom_dir}"
    "${PROMTOOL}" test rules alerts_test.yml
    ;;
  dashboards)
    need NODE node
    make_tmp
    "${NODE}" "${checker}" --export_rules "${tmp}/dashboard_queries.yml"
    PROMTOOL="${PROMTOOL:-$(command -v promtool || true)}"
    if [[ -n "${PROMTOOL}" && -x "${PROMTOOL}" ]]; then
      run_no_warnings "${PROMTOOL}" check rules "${tmp}/dashboard_queries.yml"
    else
      echo "note: promtool not found; dashboard queries not parsed by Prometheus"
    fi
    ;;
  dashboards_broken)
    need NODE node
    broken="${here}/broken"
    rc=0
    out="$("${NODE}" "${checker}" --dashboards "${broken}" \
             --rules "${broken}/alerts.yml" 2>&1)" || rc=$?
    printf '%s\n' "${out}"
    if (( rc != 1 )); then
      echo "FAILED: check_dashboards.js exited ${rc} on broken/, expected 1"
      exit 1
    fi
    missing=0
    while IFS= read -r expected; do
      [[ -z "${expected}" || "${expected}" == \#* ]] && continue
      if ! grep -qF -- "${expected}" <<<"${out}"; then
        echo "MISSING: ${expected}"
        missing=1
      fi
    done <"${broken}/expected.txt"
    (( missing == 0 )) || { echo "FAILED: expected messages missing"; exit 1; }
    echo "OK: every expected problem reported"
    ;;
  promql_unit)
    need NODE node
    "${NODE}" --test "${here}/promql_check_test.js"
    ;;
  *)
    echo "usage: $0 prometheus_config|alert_rules|alert_rules_unit|" \
      "dashboards|dashboards_broken|promql_unit" >&2
    exit 2
    ;;
esac
