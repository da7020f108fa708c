#include "tools/moe_loadgen/workload.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <random>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace moe::loadgen {
namespace {

int DrawLength(int mean, LengthDistribution distribution, double range,
               std::mt19937_64& rng) {
  switch (distribution) {
    case LengthDistribution::kFixed:
      return mean;
    case LengthDistribution::kUniform: {
      const int low = std::max(1, static_cast<int>(std::floor(mean * (1 - range))));
      const int high = std::max(low, static_cast<int>(std::ceil(mean * (1 + range))));
      return std::uniform_int_distribution<int>(low, high)(rng);
    }
    case LengthDistribution::kExponential: {
      std::exponential_distribution<double> exp(1.0 / mean);
      return std::max(1, static_cast<int>(std::lround(exp(rng))));
    }
  }
  return mean;
}

std::vector<int32_t> RandomIds(int n, int vocab, std::mt19937_64& rng) {
  std::uniform_int_distribution<int32_t> id(1, vocab - 1);
  std::vector<int32_t> ids(n);
  for (int32_t& v : ids) v = id(rng);
  return ids;
}

// Shortens the prompt's random tail, then the output, to fit the context.
void FitContext(RequestSpec& spec, int keep_prefix, int max_context) {
  const int over = static_cast<int>(spec.prompt_ids.size()) + spec.max_tokens -
                   max_context;
  if (over <= 0) return;
  const int droppable =
      static_cast<int>(spec.prompt_ids.size()) - std::max(1, keep_prefix);
  const int drop = std::min(over, std::max(0, droppable));
  spec.prompt_ids.resize(spec.prompt_ids.size() - drop);
  spec.max_tokens = std::max(
      1, max_context - static_cast<int>(spec.prompt_ids.size()));
}

}  // namespace

absl::StatusOr<LengthDistribution> ParseLengthDistribution(
    const std::string& name) {
  if (name == "fixed") return LengthDistribution::kFixed;
  if (name == "uniform") return LengthDistribution::kUniform;
  if (name == "exponential") return LengthDistribution::kExponential;
  return absl::InvalidArgumentError(absl::StrCat(
      "--length_distribution must be fixed, uniform or exponential, not \"",
      name, "\""));
}

absl::StatusOr<std::vector<RequestSpec>> BuildRandomWorkload(
    const RandomWorkload& w, const ModelLimits& limits) {
  if (w.num_requests < 1) {
    return absl::InvalidArgumentError("--num_requests must be >= 1");
  }
  if (w.input_len < 1) return absl::InvalidArgumentError("--input_len must be >= 1");
  if (w.output_len < 1) {
    return absl::InvalidArgumentError("--output_len must be >= 1");
  }
  if (!(w.range_ratio >= 0 && w.range_ratio < 1)) {
    return absl::InvalidArgumentError("--range_ratio must be in [0, 1)");
  }
  if (w.shared_prefix_len < 0 || w.num_prefixes < 1) {
    return absl::InvalidArgumentError(
        "--shared_prefix_len must be >= 0 and --num_prefixes >= 1");
  }
  if (limits.vocab_size < 2 || limits.max_context < 2) {
    return absl::FailedPreconditionError(
        "the gateway reported no usable vocabulary or context length");
  }
  if (w.shared_prefix_len + 1 >= limits.max_context) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--shared_prefix_len ", w.shared_prefix_len,
        " leaves no room in the model's context of ", limits.max_context));
  }
  std::mt19937_64 rng(w.seed);
  std::vector<std::vector<int32_t>> prefixes;
  for (int p = 0; p < w.num_prefixes && w.shared_prefix_len > 0; ++p) {
    prefixes.push_back(RandomIds(w.shared_prefix_len, limits.vocab_size, rng));
  }
  std::vector<RequestSpec> specs(w.num_requests);
  for (int i = 0; i < w.num_requests; ++i) {
    RequestSpec& spec = specs[i];
    if (!prefixes.empty()) spec.prompt_ids = prefixes[i % prefixes.size()];
    const std::vector<int32_t> tail = RandomIds(
        DrawLength(w.input_len, w.distribution, w.range_ratio, rng),
        limits.vocab_size, rng);
    spec.prompt_ids.insert(spec.prompt_ids.end(), tail.begin(), tail.end());
    spec.max_tokens = DrawLength(w.output_len, w.distribution, w.range_ratio, rng);
    FitContext(spec, w.shared_prefix_len, limits.max_context);
  }
  return specs;
}

absl::StatusOr<std::vector<RequestSpec>> LoadTrace(const std::string& path,
                                                   double speed,
                                                   const ModelLimits& limits,
                                                   uint64_t seed) {
  if (!(speed > 0)) return absl::InvalidArgumentError("--trace_speed must be > 0");
  std::ifstream in(path);
  if (!in) {
    return absl::NotFoundError(absl::StrCat("--trace: cannot read ", path));
  }
  std::mt19937_64 rng(seed);
  std::vector<RequestSpec> specs;
  std::string text;
  double last = 0;
  for (int line = 1; std::getline(in, text); ++line) {
    if (text.find_first_not_of(" \t\r") == std::string::npos) continue;
    auto bad = [&](const std::string& what) {
      return absl::InvalidArgumentError(
          absl::StrCat("--trace ", path, " line ", line, ": ", what));
    };
    const nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
    if (j.is_discarded() || !j.is_object()) return bad("not a JSON object");
    if (!j.contains("timestamp") || !j["timestamp"].is_number() ||
        !(j["timestamp"].get<double>() >= last)) {
      return bad("\"timestamp\" must be a number of seconds, not decreasing");
    }
    last = j["timestamp"].get<double>();
    if (!j.contains("output_length") || !j["output_length"].is_number_integer() ||
        j["output_length"].get<int64_t>() < 1 ||
        j["output_length"].get<int64_t>() >= limits.max_context) {
      return bad(absl::StrCat("\"output_length\" must be an integer in [1, ",
                              limits.max_context, ")"));
    }
    RequestSpec spec;
    spec.arrival_seconds = last / speed;
    spec.max_tokens = j["output_length"].get<int>();
    if (j.contains("prompt_ids")) {
      if (!j["prompt_ids"].is_array() || j["prompt_ids"].empty()) {
        return bad("\"prompt_ids\" must be a non-empty array of token ids");
      }
      for (const nlohmann::json& id : j["prompt_ids"]) {
        if (!id.is_number_integer() || id.get<int64_t>() < 0 ||
            id.get<int64_t>() >= limits.vocab_size) {
          return bad(absl::StrCat("\"prompt_ids\" holds ", id.dump(),
                                  ", not a token id in [0, ",
                                  limits.vocab_size, ")"));
        }
        spec.prompt_ids.push_back(id.get<int32_t>());
      }
    } else if (j.contains("input_length") &&
               j["input_length"].is_number_integer() &&
               j["input_length"].get<int64_t>() >= 1 &&
               j["input_length"].get<int64_t>() < limits.max_context) {
      spec.prompt_ids =
          RandomIds(j["input_length"].get<int>(), limits.vocab_size, rng);
    } else {
      return bad(absl::StrCat(
          "needs \"prompt_ids\" or an integer \"input_length\" in [1, ",
          limits.max_context, ")"));
    }
    FitContext(spec, static_cast<int>(spec.prompt_ids.size()),
               limits.max_context);
    if (static_cast<int>(spec.prompt_ids.size()) + spec.max_tokens >
        limits.max_context) {
      return bad(absl::StrCat("prompt and output pass the context length ",
                              limits.max_context));
    }
    specs.push_back(std::move(spec));
  }
  if (specs.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("--trace ", path, ": no requests"));
  }
  return specs;
}

}  // namespace moe::loadgen
