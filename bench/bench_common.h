// What the benchmark programs share: messages, the generated bench model,
// engine decode measurements and the JSON report (build/bench/report.json)
// that every program merges its keys into.
#ifndef MOE_BENCH_BENCH_COMMON_H_
#define MOE_BENCH_BENCH_COMMON_H_

#include <chrono>
#include <cstdint>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/engine.h"
#include "core/generator.h"
#include "core/model_generator.h"
#include "nlohmann/json.hpp"

namespace moe::bench {

using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point start);

// Messages carry the program's name ("moe-bench", ...), set once in main.
void SetProgramName(const std::string& name);
[[noreturn]] void Die(const std::string& message);
// A progress message on stderr.
void Note(const std::string& message);

std::optional<nlohmann::json> ReadJsonFile(const std::string& path);
bool WriteTextFile(const std::string& path, const std::string& text);

// Writes "what done / total MB (pct) rate" on one stderr line, at most ~5
// times a second.
class ProgressLine {
 public:
  explicit ProgressLine(std::string what) : what_(std::move(what)) {}
  void Update(int64_t done, int64_t total);
  void Finish();

 private:
  std::string what_;
  Clock::time_point start_ = Clock::now();
  Clock::time_point last_;
  bool shown_ = false;
};

// The generated Mixtral-shaped bench model (hidden 1024, 8 layers, 16
// experts top-2, BF16, ~2.2 GB).
GeneratorSpec BenchSpec();
// BenchSpec with 4 layers whose gates favour experts 0 and 4 (hot
// experts, see GeneratorSpec): the skewed model of the EPLB measurement.
GeneratorSpec EplbBenchSpec();
// A DeepSeek-V2-Lite-shaped model scaled to about 2 GB: V2-Lite's hidden
// size (2048), heads (16) and MLA sizes (no q LoRA, kv_lora 512, nope 128,
// rope 64, v 128), two shared experts, top-6 routing and a dense first
// layer, with 6 layers, 16 experts of width 1408 and a 32000 vocabulary.
GeneratorSpec DeepseekBenchSpec();
// Generates a model of `spec` into `dir` unless one of the same spec is
// already there (the spec is recorded in dir/bench_spec.json) or
// `regenerate`. Returns the generation seconds, 0 when the cached model was
// reused; an error naming `dir` when generating fails. `what` names the
// model in the progress lines ("bench model").
absl::StatusOr<double> EnsureGeneratedModel(const std::string& dir,
                                            const GeneratorSpec& spec,
                                            bool regenerate,
                                            const std::string& what);
// EnsureGeneratedModel of BenchSpec(); exits the program on failure.
double EnsureBenchModel(const std::string& dir, bool regenerate);

// The command-line preamble of a bench program: `usage` as the usage
// message, --help limited to the flags defined in files whose path
// contains `flags_source` (e.g. "bench/engine_bench"), `program` as the
// name in messages; exits 2 naming a stray positional argument.
void ParseBenchCommandLine(int argc, char** argv, const char* program,
                           const char* usage, const char* flags_source);
// Drops the checkpoint's files from the page cache (posix_fadvise).
void EvictFromPageCache(const std::string& dir);

std::vector<int32_t> RandomPrompt(std::mt19937& rng, int length, int vocab);
// `batch` greedy requests with random prompts of `prompt_tokens`, each
// generating `decode_steps` tokens after the one sampled at the end of
// prefill.
std::vector<GenerationRequest> DecodeRequests(int batch, int prompt_tokens,
                                              int decode_steps, int vocab,
                                              uint32_t seed);
GenerationStats RunEngine(Engine& engine,
                          const std::vector<GenerationRequest>& requests);

struct DecodeMeasurement {
  int batch = 1;
  int prompt_tokens = 16;
  int decode_steps = 64;
  int repeats = 3;
};
// Best engine decode tokens/s (prefill excluded) of `repeats` runs, after a
// shorter warm-up run.
double MeasureEngineDecode(Engine& engine, const DecodeMeasurement& m);

// One line of the printed table and one key of the report.
struct Row {
  std::string key;
  double value;
  std::string target;     // e.g. "<= 2", empty if none
  bool met = true;        // meaningful only with a target
  std::string reference;  // orientation figure, empty if none
};
void PrintTable(const std::vector<Row>& rows, const std::string& report);
// Merges `rows` and `extra` into the JSON report at `path` (other keys of
// an existing report are kept).
void WriteReport(const std::string& path, const std::vector<Row>& rows,
                 const nlohmann::json& extra);

}  // namespace moe::bench

#endif  // MOE_BENCH_BENCH_COMMON_H_
