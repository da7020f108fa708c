#include "bench/bench_common.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace moe::bench {
namespace {

std::string& ProgramName() {
  static std::string* name = new std::string("moe-bench");
  return *name;
}

}  // namespace

double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

void SetProgramName(const std::string& name) { ProgramName() = name; }

[[noreturn]] void Die(const std::string& message) {
  std::fprintf(stderr, "%s: %s\n", ProgramName().c_str(), message.c_str());
  std::exit(1);
}

void Note(const std::string& message) {
  std::fprintf(stderr, "[%s] %s\n", ProgramName().c_str(), message.c_str());
}

GeneratorSpec BenchSpec() {
  GeneratorSpec spec;
  ModelConfig& c = spec.config;
  c = SmallConfig(ModelFamily::kMixtral);
  c.hidden_size = 1024;
  c.num_layers = 8;
  c.num_heads = 8;
  c.num_kv_heads = 2;
  c.head_dim = 128;
  c.vocab_size = 32000;
  c.num_experts = 16;
  c.num_experts_per_tok = 2;
  c.expert_intermediate_size = 2560;
  c.max_position_embeddings = 8192;  // room for a 4K-token prompt and more
  spec.dtype = DType::kBF16;
  spec.num_shards = 1;
  spec.seed = 1;
  return spec;
}

GeneratorSpec EplbBenchSpec() {
  GeneratorSpec spec = BenchSpec();
  spec.config.num_layers = 4;
  // A smaller vocabulary: the step is then mostly MoE, as in the real
  // models, rather than lm_head.
  spec.config.vocab_size = 8192;
  // Mixtral's FFN width over hidden size (14336 / 4096): a token's two
  // experts then hold about 9x the attention weights, as in Mixtral 8x7B,
  // so that expert placement, the subject here, sets the step time.
  spec.config.expert_intermediate_size = 3584;
  spec.hot_experts = {0, 4};
  spec.hot_gate_bias = 16;
  return spec;
}

GeneratorSpec DeepseekBenchSpec() {
  GeneratorSpec spec;
  ModelConfig& c = spec.config;
  c = SmallConfig(ModelFamily::kDeepseekV2);
  c.hidden_size = 2048;
  c.num_layers = 6;
  c.num_heads = 16;
  c.num_kv_heads = 16;
  c.mla.q_lora_rank = 0;
  c.mla.kv_lora_rank = 512;
  c.mla.qk_nope_head_dim = 128;
  c.mla.qk_rope_head_dim = 64;
  c.mla.v_head_dim = 128;
  c.head_dim = c.mla.qk_head_dim();
  c.vocab_size = 32000;
  c.num_experts = 16;
  c.num_experts_per_tok = 6;
  c.expert_intermediate_size = 1408;
  c.shared_expert_intermediate_size = 2 * 1408;
  c.first_k_dense_replace = 1;
  c.dense_intermediate_size = 10944;
  c.max_position_embeddings = 8192;
  spec.dtype = DType::kBF16;
  spec.num_shards = 1;
  spec.seed = 1;
  return spec;
}

namespace {

// Bump when the generator's output changes, to invalidate cached models.
constexpr int kBenchModelVersion = 1;

// What identifies a generated model: the config as written plus the rest of
// the spec.
nlohmann::json SpecJson(const GeneratorSpec& spec) {
  nlohmann::json j;
  j["version"] = kBenchModelVersion;
  j["config"] = nlohmann::json::parse(ModelConfigToJson(spec.config),
                                      nullptr, false);
  j["dtype"] = std::string(DTypeName(spec.dtype));
  j["num_shards"] = spec.num_shards;
  j["seed"] = spec.seed;
  if (!spec.hot_experts.empty()) {
    j["hot_experts"] = spec.hot_experts;
    j["hot_gate_bias"] = spec.hot_gate_bias;
  }
  return j;
}

}  // namespace

std::optional<nlohmann::json> ReadJsonFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return std::nullopt;
  std::stringstream ss;
  ss << in.rdbuf();
  nlohmann::json j = nlohmann::json::parse(ss.str(), nullptr, false);
  if (j.is_discarded()) return std::nullopt;
  return j;
}

bool WriteTextFile(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::trunc);
  out << text;
  out.close();
  return static_cast<bool>(out);
}

void ProgressLine::Update(int64_t done, int64_t total) {
  const Clock::time_point now = Clock::now();
  if (done < total && shown_ && now - last_ < std::chrono::milliseconds(200)) {
    return;
  }
  last_ = now;
  const double seconds = SecondsSince(start_);
  std::fprintf(stderr, "\r[%s] %s %8.1f / %.1f MB (%3d%%) %6.0f MB/s ",
               ProgramName().c_str(), what_.c_str(), done / 1e6, total / 1e6,
               total > 0 ? static_cast<int>(100.0 * done / total) : 100,
               seconds > 0 ? done / 1e6 / seconds : 0.0);
  shown_ = true;
}

void ProgressLine::Finish() {
  if (shown_) std::fputc('\n', stderr);
  shown_ = false;
}

// Drops the checkpoint's files from the page cache (posix_fadvise DONTNEED;
// needs no privileges and touches no other file).
void EvictFromPageCache(const std::string& dir) {
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    if (entry.path().extension() != ".safetensors") continue;
    const int fd = ::open(entry.path().c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) continue;
    ::fdatasync(fd);
    ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    ::close(fd);
  }
}

absl::StatusOr<double> EnsureGeneratedModel(const std::string& dir,
                                            const GeneratorSpec& spec,
                                            bool regenerate,
                                            const std::string& what) {
  const nlohmann::json want = SpecJson(spec);
  const std::string spec_path = dir + "/bench_spec.json";
  std::optional<nlohmann::json> have = ReadJsonFile(spec_path);
  if (!regenerate && have && *have == want &&
      std::filesystem::exists(dir + "/config.json") &&
      std::filesystem::exists(dir + "/model.safetensors")) {
    Note(absl::StrCat("using the cached ", what, " in ", dir));
    return 0.0;
  }
  Note(absl::StrCat("generating the ", what, " in ", dir,
                    have ? " (cached spec differs)" : ""));
  std::error_code ec;
  std::filesystem::remove(spec_path, ec);
  ProgressLine line("writing");
  const Clock::time_point start = Clock::now();
  const absl::Status status = GenerateModel(
      dir, spec,
      [&](int64_t done, int64_t total) { line.Update(done, total); });
  line.Finish();
  if (!status.ok()) {
    return absl::Status(status.code(),
                        absl::StrCat("generating the ", what, " in ", dir,
                                     ": ", status.message()));
  }
  const double seconds = SecondsSince(start);
  if (!WriteTextFile(spec_path, want.dump(2) + "\n")) {
    return absl::UnavailableError(absl::StrCat("cannot write ", spec_path));
  }
  Note(absl::StrFormat("generated in %.1f s", seconds));
  return seconds;
}

double EnsureBenchModel(const std::string& dir, bool regenerate) {
  absl::StatusOr<double> seconds =
      EnsureGeneratedModel(dir, BenchSpec(), regenerate, "bench model");
  if (!seconds.ok()) Die(std::string(seconds.status().message()));
  return *seconds;
}

void ParseBenchCommandLine(int argc, char** argv, const char* program,
                           const char* usage, const char* flags_source) {
  absl::SetProgramUsageMessage(usage);
  absl::FlagsUsageConfig config;
  const std::string source = flags_source;
  config.contains_help_flags = [source](absl::string_view path) {
    return absl::StrContains(path, source);
  };
  config.contains_helpshort_flags = config.contains_help_flags;
  absl::SetFlagsUsageConfig(config);
  std::vector<char*> rest = absl::ParseCommandLine(argc, argv);
  SetProgramName(program);
  if (rest.size() > 1) {
    std::fprintf(stderr, "%s: unexpected argument \"%s\"\n", program, rest[1]);
    std::exit(2);
  }
}

std::vector<int32_t> RandomPrompt(std::mt19937& rng, int length, int vocab) {
  std::uniform_int_distribution<int32_t> id(3, vocab - 1);
  std::vector<int32_t> prompt(length);
  for (int32_t& t : prompt) t = id(rng);
  return prompt;
}

// `batch` greedy requests with random prompts, each generating
// `decode_steps` tokens after the one sampled at the end of prefill.
std::vector<GenerationRequest> DecodeRequests(int batch, int prompt_tokens,
                                             int decode_steps, int vocab,
                                             uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<GenerationRequest> requests(batch);
  for (GenerationRequest& r : requests) {
    r.prompt = RandomPrompt(rng, prompt_tokens, vocab);
    r.max_tokens = decode_steps + 1;
    r.ignore_eos = true;
  }
  return requests;
}

GenerationStats RunEngine(Engine& engine,
                         const std::vector<GenerationRequest>& requests) {
  GeneratorOptions options;
  // The whole batch's prompts in one prefill step where possible.
  options.prefill_chunk_tokens = 4096;
  absl::StatusOr<BatchGeneration> out =
      GenerateBatch(engine, requests, options);
  if (!out.ok())
    Die(absl::StrCat("generation failed: ", out.status().ToString()));
  return out->stats;
}

double MeasureEngineDecode(Engine& engine, const DecodeMeasurement& m) {
  const int vocab = engine.config().vocab_size;
  Note(absl::StrCat("engine decode, batch ", m.batch, ": warm-up"));
  RunEngine(engine, DecodeRequests(m.batch, m.prompt_tokens,
                                   std::min(m.decode_steps, 8), vocab, 99));
  double best = 0;
  for (int r = 0; r < m.repeats; ++r) {
    const GenerationStats s = RunEngine(
        engine,
        DecodeRequests(m.batch, m.prompt_tokens, m.decode_steps, vocab, 1000 + r));
    const double rate =
        s.decode_seconds > 0 ? s.decode_tokens / s.decode_seconds : 0;
    Note(absl::StrFormat(
        "engine decode, batch %d: run %d/%d: %d tokens in %.3f s = %.1f tokens/s",
        m.batch, r + 1, m.repeats, s.decode_tokens, s.decode_seconds, rate));
    best = std::max(best, rate);
  }
  return best;
}

void PrintTable(const std::vector<Row>& rows, const std::string& report) {
  std::printf("%-34s %12s  %-8s %-6s %s\n", "key", "value", "target", "",
              "reference");
  for (const Row& r : rows) {
    std::printf("%-34s %12.3f  %-8s %-6s %s\n", r.key.c_str(), r.value,
                r.target.c_str(),
                r.target.empty() ? "" : (r.met ? "ok" : "MISSED"),
                r.reference.c_str());
  }
  std::printf("report written to %s\n", report.c_str());
}

void WriteReport(const std::string& path, const std::vector<Row>& rows,
                 const nlohmann::json& extra) {
  nlohmann::json report = nlohmann::json::object();
  if (std::optional<nlohmann::json> old = ReadJsonFile(path);
      old && old->is_object()) {
    report = *old;
  }
  for (const Row& r : rows) report[r.key] = r.value;
  for (auto it = extra.begin(); it != extra.end(); ++it) {
    report[it.key()] = it.value();
  }
  const std::filesystem::path parent =
      std::filesystem::path(path).parent_path();
  std::error_code ec;
  if (!parent.empty()) std::filesystem::create_directories(parent, ec);
  if (ec)
    Die(absl::StrCat("cannot create ", parent.string(), ": ", ec.message()));
  if (!WriteTextFile(path, report.dump(2) + "\n")) {
    Die(absl::StrCat("cannot write ", path));
  }
}

}  // namespace moe::bench
