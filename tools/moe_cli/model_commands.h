// `moe-cli info` and `moe-cli abort`: the gateway's unary calls;
// `moe-cli rebalance`: the router's.
#ifndef MOE_TOOLS_MOE_CLI_MODEL_COMMANDS_H_
#define MOE_TOOLS_MOE_CLI_MODEL_COMMANDS_H_

#include <string>

namespace moe::cli {

// Prints GetModelInfo, one "field: value" line each (one JSON object with
// `json`). Returns 0, or 1 after an RPC error. `timeout_seconds` <= 0 means
// the default of 30 s.
int RunInfo(const std::string& gateway, double timeout_seconds, bool json);

// Aborts the running request `request_id`. Prints "request ID: aborted"
// and returns 0, or "request ID: not running" and returns 1 (also after an
// RPC error).
int RunAbort(const std::string& gateway, const std::string& request_id,
             double timeout_seconds);

// Asks the router to rebalance its experts (RouterService.Rebalance) and
// prints the outcome: whether experts moved, the imbalance before and
// after, how many were loaded and unloaded (one JSON object with `json`).
// Returns 0, or 1 after an RPC error. `timeout_seconds` <= 0: 30 minutes.
int RunRebalance(const std::string& router, bool force, double timeout_seconds,
                 bool json);

}  // namespace moe::cli

#endif  // MOE_TOOLS_MOE_CLI_MODEL_COMMANDS_H_
