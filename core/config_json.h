// Typed readers of config.json fields, shared by the family parsers
// (core/model_config.cc, core/model_config_deepseek.cc). Every error is
// INVALID_ARGUMENT and names the field.
#ifndef MOE_CORE_CONFIG_JSON_H_
#define MOE_CORE_CONFIG_JSON_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"

namespace moe::config_json {

using Json = nlohmann::json;

// "config.json: field \"<field>\" <problem>".
absl::Status FieldError(absl::string_view field, absl::string_view problem);

// A required integer in [1, 2^30].
absl::StatusOr<int> RequiredInt(const Json& j, const char* field);

// An integer in [min_value, 2^30]; `dflt` when absent or null.
absl::StatusOr<int> OptionalInt(const Json& j, const char* field, int dflt,
                                int64_t min_value = 0);

// A positive finite number; `dflt` when absent or null.
absl::StatusOr<double> OptionalNumber(const Json& j, const char* field,
                                      double dflt);

// A positive number that stays positive and finite as a float.
absl::StatusOr<float> OptionalPositiveFloat(const Json& j, const char* field,
                                            double dflt);

absl::StatusOr<bool> OptionalBool(const Json& j, const char* field, bool dflt);

// An integer or a list of integers, each a valid token id.
absl::StatusOr<std::vector<int>> OptionalIntList(const Json& j,
                                                 const char* field);

}  // namespace moe::config_json

#endif  // MOE_CORE_CONFIG_JSON_H_
