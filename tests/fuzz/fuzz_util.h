// Helpers shared by the libFuzzer targets of tests/fuzz.
#ifndef MOE_TESTS_FUZZ_FUZZ_UTIL_H_
#define MOE_TESTS_FUZZ_FUZZ_UTIL_H_

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "core/model_config.h"

namespace moe::fuzz {

// Discards protobuf's log messages: it logs every input it refuses to parse
// (e.g. a string field that is not UTF-8), noise that slows the targets down.
bool QuietProtobufLogs();

// The input parsed as a `Message` (protobuf wire format, as the server
// receives it); nullopt when the bytes are not one, which the targets skip.
template <typename Message>
std::optional<Message> ParseProto(const uint8_t* data, size_t size) {
  static const bool quiet = QuietProtobufLogs();
  (void)quiet;
  Message message;
  if (!message.ParseFromArray(data, static_cast<int>(size))) return std::nullopt;
  return message;
}

// A small random checkpoint of `family` (core/model_generator's SmallConfig),
// written on first use into a temporary directory that is removed at exit.
// Aborts if it cannot be written: the target cannot run without it.
const std::string& SmallModelDir(ModelFamily family);

// Aborts with `what` and the status when `status` is not OK: a broken
// invariant the target checks, which libFuzzer reports as a crash.
void CheckOk(const absl::Status& status, const char* what);

// Aborts with `what` when `condition` is false.
inline void Check(bool condition, const char* what) {
  if (!condition) {
    std::fprintf(stderr, "fuzz invariant broken: %s\n", what);
    std::abort();
  }
}

}  // namespace moe::fuzz

#endif  // MOE_TESTS_FUZZ_FUZZ_UTIL_H_
