#include "core/config_json.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "core/status_macros.h"

namespace moe::config_json {

absl::Status FieldError(absl::string_view field, absl::string_view problem) {
  return absl::InvalidArgumentError(
      absl::StrCat("config.json: field \"", field, "\" ", problem));
}

// Reads a required positive integer.
absl::StatusOr<int> RequiredInt(const Json& j, const char* field) {
  auto it = j.find(field);
  if (it == j.end() || it->is_null()) return FieldError(field, "is missing");
  if (!it->is_number_integer()) return FieldError(field, "must be an integer");
  const int64_t v = it->get<int64_t>();
  if (v <= 0 || v > (int64_t{1} << 30)) {
    return FieldError(field, absl::StrCat("must be positive, got ", v));
  }
  return static_cast<int>(v);
}

absl::StatusOr<int> OptionalInt(const Json& j, const char* field, int dflt,
                                int64_t min_value) {
  auto it = j.find(field);
  if (it == j.end() || it->is_null()) return dflt;
  if (!it->is_number_integer()) return FieldError(field, "must be an integer");
  const int64_t v = it->get<int64_t>();
  if (v < min_value || v > (int64_t{1} << 30)) {
    return FieldError(field, absl::StrCat("is out of range: ", v));
  }
  return static_cast<int>(v);
}

absl::StatusOr<double> OptionalNumber(const Json& j, const char* field,
                                      double dflt) {
  auto it = j.find(field);
  if (it == j.end() || it->is_null()) return dflt;
  if (!it->is_number()) return FieldError(field, "must be a number");
  const double v = it->get<double>();
  if (!(v > 0) || !std::isfinite(v)) {
    return FieldError(field, absl::StrCat("must be positive and finite, got ", v));
  }
  return v;
}

// A positive number stored as a float: one that rounds to 0 or to infinity
// in float (1e-50, 1e300) is refused, as it would silently become no epsilon
// or no clipping.
absl::StatusOr<float> OptionalPositiveFloat(const Json& j, const char* field,
                                            double dflt) {
  double v;
  ASSIGN_OR_RETURN(v, OptionalNumber(j, field, dflt));
  const float f = static_cast<float>(v);
  if (!(f > 0) || !std::isfinite(f)) {
    return FieldError(field,
                      absl::StrCat("is outside the float range: ", v));
  }
  return f;
}

absl::StatusOr<bool> OptionalBool(const Json& j, const char* field, bool dflt) {
  auto it = j.find(field);
  if (it == j.end() || it->is_null()) return dflt;
  if (!it->is_boolean()) return FieldError(field, "must be true or false");
  return it->get<bool>();
}

// An integer or a list of integers (eos_token_id may be either).
absl::StatusOr<std::vector<int>> OptionalIntList(const Json& j,
                                                 const char* field) {
  std::vector<int> out;
  auto it = j.find(field);
  if (it == j.end() || it->is_null()) return out;
  auto in_range = [](const Json& v) {
    return v.is_number_integer() && v.get<int64_t>() >= 0 &&
           v.get<int64_t>() <= INT32_MAX;
  };
  if (it->is_number_integer()) {
    if (!in_range(*it)) {
      return FieldError(field, absl::StrCat("holds an invalid token id ", it->dump()));
    }
    out.push_back(it->get<int>());
    return out;
  }
  if (!it->is_array()) {
    return FieldError(field, "must be an integer or a list of integers");
  }
  for (const Json& v : *it) {
    if (!v.is_number_integer()) {
      return FieldError(field, "must contain only integers");
    }
    if (!in_range(v)) {
      return FieldError(field, absl::StrCat("holds an invalid token id ", v.dump()));
    }
    out.push_back(v.get<int>());
  }
  return out;
}

}  // namespace moe::config_json
