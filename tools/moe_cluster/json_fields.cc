#include "tools/moe_cluster/json_fields.h"

#include <cmath>
#include <cstdint>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace moe::cluster {
namespace {

absl::Status FieldError(absl::string_view path, absl::string_view key,
                        absl::string_view problem) {
  return PathError(FieldPath(path, key), problem);
}

std::string Quoted(std::initializer_list<absl::string_view> words) {
  return absl::StrJoin(words, ", ", [](std::string* out, absl::string_view w) {
    absl::StrAppend(out, "\"", w, "\"");
  });
}

// Records the parse error instead of throwing.
struct ErrorRecorder : nlohmann::json_sax<nlohmann::json> {
  std::string message;
  bool null() override { return true; }
  bool boolean(bool) override { return true; }
  bool number_integer(number_integer_t) override { return true; }
  bool number_unsigned(number_unsigned_t) override { return true; }
  bool number_float(number_float_t, const string_t&) override { return true; }
  bool string(string_t&) override { return true; }
  bool binary(binary_t&) override { return true; }
  bool start_object(std::size_t) override { return true; }
  bool key(string_t&) override { return true; }
  bool end_object() override { return true; }
  bool start_array(std::size_t) override { return true; }
  bool end_array() override { return true; }
  bool parse_error(std::size_t, const std::string&,
                   const nlohmann::detail::exception& e) override {
    message = e.what();
    return false;
  }
};

}  // namespace

absl::StatusOr<nlohmann::json> ParseJson(absl::string_view text) {
  nlohmann::json value =
      nlohmann::json::parse(text.begin(), text.end(), nullptr,
                            /*allow_exceptions=*/false);
  if (!value.is_discarded()) return value;
  // The non-throwing parse gives no reason; a SAX pass that records the
  // error (again without throwing) gives it, with the position.
  ErrorRecorder recorder;
  nlohmann::json::sax_parse(text.begin(), text.end(), &recorder);
  return absl::InvalidArgumentError(
      absl::StrCat("not valid JSON: ", recorder.message));
}

absl::Status PathError(absl::string_view path, absl::string_view problem) {
  return absl::InvalidArgumentError(absl::StrCat(path, ": ", problem));
}

absl::Status Prefixed(absl::string_view prefix, const absl::Status& status) {
  return absl::Status(status.code(),
                      absl::StrCat(prefix, ": ", status.message()));
}

std::string FieldPath(absl::string_view path, absl::string_view key) {
  return path.empty() ? std::string(key) : absl::StrCat(path, ".", key);
}

std::string IndexPath(absl::string_view path, size_t index) {
  return absl::StrCat(path, "[", index, "]");
}

absl::Status CheckObject(const nlohmann::json& value, absl::string_view path,
                         std::initializer_list<absl::string_view> allowed) {
  if (!value.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path.empty() ? "top level" : path, ": must be an object"));
  }
  for (auto it = value.begin(); it != value.end(); ++it) {
    bool known = false;
    for (absl::string_view a : allowed) known = known || a == it.key();
    if (!known) {
      return FieldError(
          path, it.key(),
          allowed.size() == 0
              ? std::string("unknown key (this object takes no keys)")
              : absl::StrCat("unknown key (expected one of: ", Quoted(allowed),
                             ")"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::optional<int>> OptionalInt(const nlohmann::json& object,
                                               absl::string_view path,
                                               absl::string_view key, int min,
                                               int max) {
  auto it = object.find(std::string(key));
  if (it == object.end()) return std::optional<int>();
  const std::string expected =
      absl::StrCat("must be an integer in [", min, ", ", max, "]");
  if (!it->is_number_integer()) {
    return FieldError(path, key, absl::StrCat(expected, ", got ", it->dump()));
  }
  const bool in_range =
      it->is_number_unsigned()
          ? it->get<uint64_t>() <= static_cast<uint64_t>(max) &&
                (min <= 0 || it->get<uint64_t>() >= static_cast<uint64_t>(min))
          : it->get<int64_t>() >= min && it->get<int64_t>() <= max;
  if (!in_range) {
    return FieldError(path, key, absl::StrCat(expected, ", got ", it->dump()));
  }
  return std::optional<int>(static_cast<int>(it->get<int64_t>()));
}

absl::StatusOr<std::optional<double>> OptionalNumber(
    const nlohmann::json& object, absl::string_view path, absl::string_view key,
    double min, bool min_exclusive) {
  auto it = object.find(std::string(key));
  if (it == object.end()) return std::optional<double>();
  const std::string expected = absl::StrCat("must be a finite number ",
                                            min_exclusive ? "> " : ">= ", min);
  if (!it->is_number()) {
    return FieldError(path, key, absl::StrCat(expected, ", got ", it->dump()));
  }
  const double value = it->get<double>();
  if (!std::isfinite(value) || value < min || (min_exclusive && value == min)) {
    return FieldError(path, key, absl::StrCat(expected, ", got ", it->dump()));
  }
  return std::optional<double>(value);
}

absl::StatusOr<std::optional<bool>> OptionalBool(const nlohmann::json& object,
                                                 absl::string_view path,
                                                 absl::string_view key) {
  auto it = object.find(std::string(key));
  if (it == object.end()) return std::optional<bool>();
  if (!it->is_boolean()) {
    return FieldError(path, key,
                      absl::StrCat("must be true or false, got ", it->dump()));
  }
  return std::optional<bool>(it->get<bool>());
}

absl::StatusOr<std::optional<std::string>> OptionalString(
    const nlohmann::json& object, absl::string_view path, absl::string_view key,
    std::initializer_list<absl::string_view> choices) {
  auto it = object.find(std::string(key));
  if (it == object.end()) return std::optional<std::string>();
  const std::string expected =
      choices.size() == 0 ? std::string("must be a string")
                          : absl::StrCat("must be one of ", Quoted(choices));
  if (!it->is_string()) {
    return FieldError(path, key, absl::StrCat(expected, ", got ", it->dump()));
  }
  std::string value = it->get<std::string>();
  if (choices.size() > 0) {
    bool found = false;
    for (absl::string_view c : choices) found = found || c == value;
    if (!found) {
      return FieldError(path, key,
                        absl::StrCat(expected, ", got ", it->dump()));
    }
  }
  return std::optional<std::string>(std::move(value));
}

}  // namespace moe::cluster
