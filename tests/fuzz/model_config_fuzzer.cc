// ParseModelConfig on arbitrary config.json text. A config it accepts must
// survive ModelConfigToJson: the JSON re-parses, and serialising the
// re-parsed config gives the same text (the round trip the header promises).
#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/strings/string_view.h"
#include "core/model_config.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view text(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<moe::ModelConfig> config = moe::ParseModelConfig(text);
  if (!config.ok()) return 0;
  const std::string json = moe::ModelConfigToJson(*config);
  absl::StatusOr<moe::ModelConfig> again = moe::ParseModelConfig(json);
  moe::fuzz::CheckOk(again.status(), "re-parsing ModelConfigToJson's output");
  moe::fuzz::Check(moe::ModelConfigToJson(*again) == json,
                   "ModelConfigToJson(ParseModelConfig(x)) is not stable");
  // What the engines derive from it must not overflow either.
  (void)config->NumMoeLayers();
  return 0;
}
