// Typed, range-checked reads of JSON object fields for configuration files
// that must reject typos: every error names the JSON path of the field
// ("router.capacity_factor: must be a finite number >= 0").
#ifndef MOE_TOOLS_MOE_CLUSTER_JSON_FIELDS_H_
#define MOE_TOOLS_MOE_CLUSTER_JSON_FIELDS_H_

#include <initializer_list>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"

namespace moe::cluster {

// Strict JSON (no comments). INVALID_ARGUMENT "not valid JSON: ..." with the
// parser's message, which gives the line and column.
absl::StatusOr<nlohmann::json> ParseJson(absl::string_view text);

// INVALID_ARGUMENT "PATH: PROBLEM".
absl::Status PathError(absl::string_view path, absl::string_view problem);

// `status` with "PREFIX: " before its message.
absl::Status Prefixed(absl::string_view prefix, const absl::Status& status);

// "a.b" / "b" when `path` is empty.
std::string FieldPath(absl::string_view path, absl::string_view key);
// "a[3]".
std::string IndexPath(absl::string_view path, size_t index);

// INVALID_ARGUMENT "PATH: must be an object" unless `value` is an object,
// else "PATH.KEY: unknown key (expected one of: ...)" for the first key (in
// the object's order) not in `allowed`.
absl::Status CheckObject(const nlohmann::json& value, absl::string_view path,
                         std::initializer_list<absl::string_view> allowed);

// Reads object[key]; nullopt when the key is absent. INVALID_ARGUMENT naming
// PATH.KEY when the value has the wrong type or lies outside [min, max].
absl::StatusOr<std::optional<int>> OptionalInt(const nlohmann::json& object,
                                               absl::string_view path,
                                               absl::string_view key, int min,
                                               int max);

// A finite number (integer or not) >= min, or > min when `min_exclusive`.
absl::StatusOr<std::optional<double>> OptionalNumber(
    const nlohmann::json& object, absl::string_view path, absl::string_view key,
    double min, bool min_exclusive);

// true or false.
absl::StatusOr<std::optional<bool>> OptionalBool(const nlohmann::json& object,
                                                 absl::string_view path,
                                                 absl::string_view key);

// A string; when `choices` is not empty it must be one of them.
absl::StatusOr<std::optional<std::string>> OptionalString(
    const nlohmann::json& object, absl::string_view path, absl::string_view key,
    std::initializer_list<absl::string_view> choices = {});

}  // namespace moe::cluster

#endif  // MOE_TOOLS_MOE_CLUSTER_JSON_FIELDS_H_
