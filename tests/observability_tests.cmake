# Checks of the observability configuration (issue 5): the Prometheus scrape
# config and alert rules with promtool, and the Grafana dashboards and the
# rules' queries against the metric contract in deploy/metrics.md with
# tests/observability/check_dashboards.js (node, no npm packages). Each test
# prints "SKIPPED: <tool> not found" and exits 77 when promtool or node is
# missing. Run them alone with `ctest -L observability`.

set(MOE_OBSERVABILITY_CHECK ${CMAKE_SOURCE_DIR}/tests/observability/run_check.sh)

# deploy/prometheus/prometheus.yml, checked on a copy with sample file_sd
# target files, as moe-cluster --prometheus_targets_dir writes them.
add_test(NAME observability_prometheus_config
  COMMAND bash ${MOE_OBSERVABILITY_CHECK} prometheus_config)

# deploy/prometheus/alerts.yml: syntax and lint.
add_test(NAME observability_alert_rules
  COMMAND bash ${MOE_OBSERVABILITY_CHECK} alert_rules)

# deploy/prometheus/alerts_test.yml: each alert fires, and stays quiet.
add_test(NAME observability_alert_rules_unit
  COMMAND bash ${MOE_OBSERVABILITY_CHECK} alert_rules_unit)

# deploy/grafana/*.json and the alerts' exprs use only documented metrics,
# types and labels; promtool then parses every dashboard query.
add_test(NAME observability_dashboards
  COMMAND bash ${MOE_OBSERVABILITY_CHECK} dashboards)

# The checker rejects tests/observability/broken/ with the expected messages.
add_test(NAME observability_dashboards_broken
  COMMAND bash ${MOE_OBSERVABILITY_CHECK} dashboards_broken)

# Unit tests of the PromQL checker behind check_dashboards.js.
add_test(NAME observability_promql_check_unit
  COMMAND bash ${MOE_OBSERVABILITY_CHECK} promql_unit)

set_tests_properties(
  observability_prometheus_config
  observability_alert_rules
  observability_alert_rules_unit
  observability_dashboards
  observability_dashboards_broken
  observability_promql_check_unit
  PROPERTIES LABELS observability TIMEOUT 120 SKIP_RETURN_CODE 77)
