// moe-generate: loads a checkpoint into the single-process engine and
// generates from one prompt or a file of prompts decoded together as a batch.
#include <cstdio>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "core/engine.h"
#include "core/generator.h"
#include "nlohmann/json.hpp"
#include "tools/common/command_line.h"

ABSL_FLAG(std::string, model, "", "Checkpoint directory (config.json + safetensors).");
ABSL_FLAG(std::string, prompt_ids, "", "Comma-separated prompt token ids, e.g. 1,2,3.");
ABSL_FLAG(std::string, prompts_file, "",
          "JSON lines file, one {\"prompt_ids\": [...]} per line; all prompts are "
          "decoded together as one batch.");
ABSL_FLAG(int, max_tokens, 16, "Tokens to generate per prompt.");
ABSL_FLAG(double, temperature, 0.0, "Sampling temperature; 0 = greedy.");
ABSL_FLAG(int, top_k, 0, "Keep the k most likely tokens; 0 = off.");
ABSL_FLAG(double, top_p, 1.0, "Nucleus sampling mass in (0, 1]; 1 = off.");
ABSL_FLAG(double, repetition_penalty, 1.0, "Hugging Face repetition penalty; 1 = off.");
ABSL_FLAG(uint64_t, seed, 0, "Sampling seed (per prompt: seed + index).");
ABSL_FLAG(std::string, device, "cpu",
          "Where the model runs: cpu, cuda (device 0) or cuda:N. On a CUDA "
          "device the weights are held as BF16 and the KV cache "
          "(--kv_cache_mb) is device memory.");
ABSL_FLAG(std::string, stop_ids, "", "Comma-separated token ids that end generation.");
ABSL_FLAG(bool, ignore_eos, false, "Do not stop at the model's EOS token.");
ABSL_FLAG(bool, json, false, "Print one JSON line per sequence.");
ABSL_FLAG(bool, dump_logits, false,
          "With --json: include the last position's logits of every step.");
ABSL_FLAG(int, threads, 0, "Compute threads; 0 = one per core.");
ABSL_FLAG(int, prefill_chunk, 512, "Token budget of one prefill step.");
ABSL_FLAG(int64_t, kv_cache_mb, 1024, "KV cache memory budget in MiB.");

namespace {

[[noreturn]] void Fail(const std::string& message) {
  std::fprintf(stderr, "moe-generate: %s\n", message.c_str());
  std::exit(2);
}

std::vector<int32_t> ParseIds(const std::string& flag, const std::string& text) {
  std::vector<int32_t> ids;
  if (text.empty()) return ids;
  for (absl::string_view part : absl::StrSplit(text, ',')) {
    int32_t id;
    if (!absl::SimpleAtoi(part, &id)) {
      Fail(absl::StrCat("--", flag, ": \"", part, "\" is not an integer token id"));
    }
    ids.push_back(id);
  }
  return ids;
}

std::vector<std::vector<int32_t>> ReadPromptsFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) Fail(absl::StrCat("--prompts_file: cannot read ", path));
  std::vector<std::vector<int32_t>> prompts;
  std::string line;
  int line_no = 0;
  while (std::getline(in, line)) {
    ++line_no;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    const std::string where = absl::StrCat(path, ":", line_no, ": ");
    if (j.is_discarded() || !j.is_object()) Fail(where + "not a JSON object");
    auto it = j.find("prompt_ids");
    if (it == j.end() || !it->is_array()) {
      Fail(where + "field \"prompt_ids\" is missing or not a list");
    }
    std::vector<int32_t> ids;
    for (const auto& v : *it) {
      if (!v.is_number_integer()) Fail(where + "prompt_ids must hold integers");
      const int64_t id = v.get<int64_t>();
      if (id < INT32_MIN || id > INT32_MAX) {
        Fail(absl::StrCat(where, "prompt_ids holds out-of-range id ", id));
      }
      ids.push_back(static_cast<int32_t>(id));
    }
    prompts.push_back(std::move(ids));
  }
  if (prompts.empty()) Fail(absl::StrCat("--prompts_file: ", path, " holds no prompts"));
  return prompts;
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Generate tokens with the single-process engine.\n"
      "  moe-generate --model DIR --prompt_ids 1,2,3 --max_tokens 16 [--json]\n"
      "  moe-generate --model DIR --prompts_file prompts.jsonl --json");
  std::vector<char*> rest = moe::tools::ParseCommandLineWithHyphens(argc, argv);
  if (rest.size() > 1) Fail(absl::StrCat("unexpected argument \"", rest[1], "\""));
  const std::string model = absl::GetFlag(FLAGS_model);
  if (model.empty()) Fail("--model is required");
  const bool have_ids = !absl::GetFlag(FLAGS_prompt_ids).empty();
  const bool have_file = !absl::GetFlag(FLAGS_prompts_file).empty();
  if (have_ids == have_file) Fail("give exactly one of --prompt_ids or --prompts_file");
  if (absl::GetFlag(FLAGS_kv_cache_mb) <= 0) Fail("--kv_cache_mb must be positive");

  std::vector<std::vector<int32_t>> prompts =
      have_ids ? std::vector<std::vector<int32_t>>{ParseIds(
                     "prompt_ids", absl::GetFlag(FLAGS_prompt_ids))}
               : ReadPromptsFile(absl::GetFlag(FLAGS_prompts_file));

  moe::EngineOptions options;
  options.model_dir = model;
  options.num_threads = absl::GetFlag(FLAGS_threads);
  options.kv_cache_bytes = absl::GetFlag(FLAGS_kv_cache_mb) << 20;
  absl::StatusOr<moe::DeviceSpec> device =
      moe::ParseDeviceSpec(absl::GetFlag(FLAGS_device));
  if (!device.ok()) Fail(absl::StrCat("--device: ", device.status().message()));
  if (absl::Status s = moe::CheckDeviceUsable(*device); !s.ok()) {
    Fail(absl::StrCat("--device: ", s.message()));
  }
  options.device = *device;
  const absl::Time load_start = absl::Now();
  absl::StatusOr<std::unique_ptr<moe::Engine>> engine = moe::Engine::Load(options);
  if (!engine.ok()) {
    std::fprintf(stderr, "moe-generate: cannot load model: %s\n",
                 std::string(engine.status().message()).c_str());
    return 1;
  }
  const double load_seconds = absl::ToDoubleSeconds(absl::Now() - load_start);

  const std::vector<int32_t> stop_ids =
      ParseIds("stop_ids", absl::GetFlag(FLAGS_stop_ids));
  std::vector<moe::GenerationRequest> requests;
  for (size_t i = 0; i < prompts.size(); ++i) {
    moe::GenerationRequest r;
    r.prompt = prompts[i];
    r.max_tokens = absl::GetFlag(FLAGS_max_tokens);
    r.sampling.temperature = static_cast<float>(absl::GetFlag(FLAGS_temperature));
    r.sampling.top_k = absl::GetFlag(FLAGS_top_k);
    r.sampling.top_p = static_cast<float>(absl::GetFlag(FLAGS_top_p));
    r.sampling.repetition_penalty =
        static_cast<float>(absl::GetFlag(FLAGS_repetition_penalty));
    r.sampling.seed = absl::GetFlag(FLAGS_seed) + i;
    r.stop_token_ids = stop_ids;
    r.ignore_eos = absl::GetFlag(FLAGS_ignore_eos);
    r.capture_logits = absl::GetFlag(FLAGS_dump_logits);
    if (absl::Status valid = moe::ValidateRequest((*engine)->config(), r);
        !valid.ok()) {
      Fail(absl::StrCat(requests.empty() && prompts.size() == 1
                            ? ""
                            : absl::StrCat("prompt ", i, ": "),
                        valid.message()));
    }
    requests.push_back(std::move(r));
  }
  moe::GeneratorOptions gen_options;
  gen_options.prefill_chunk_tokens = absl::GetFlag(FLAGS_prefill_chunk);
  const bool stream = !absl::GetFlag(FLAGS_json) && requests.size() == 1;
  if (stream) {
    std::printf("prompt: %s\noutput: ", absl::StrJoin(requests[0].prompt, ",").c_str());
    std::fflush(stdout);
    gen_options.on_token = [first = true](size_t, int32_t token) mutable {
      std::printf(first ? "%d" : ",%d", token);
      std::fflush(stdout);
      first = false;
    };
  }
  absl::StatusOr<moe::BatchGeneration> gen =
      moe::GenerateBatch(**engine, requests, gen_options);
  if (!gen.ok()) {
    std::fprintf(stderr, "moe-generate: %s\n",
                 std::string(gen.status().message()).c_str());
    return gen.status().code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
  }

  if (absl::GetFlag(FLAGS_json)) {
    for (size_t i = 0; i < gen->results.size(); ++i) {
      const moe::GenerationResult& r = gen->results[i];
      nlohmann::json line;
      line["prompt_ids"] = requests[i].prompt;
      line["output_ids"] = r.output;
      line["finish_reason"] = std::string(moe::FinishReasonName(r.finish));
      if (absl::GetFlag(FLAGS_dump_logits)) line["logits"] = r.logits;
      std::cout << line.dump() << "\n";
    }
    return 0;
  }
  for (size_t i = 0; i < gen->results.size() && !stream; ++i) {
    const moe::GenerationResult& r = gen->results[i];
    std::cout << "prompt " << i << ": " << absl::StrJoin(requests[i].prompt, ",")
              << "\noutput " << i << ": " << absl::StrJoin(r.output, ",")
              << "  (" << moe::FinishReasonName(r.finish) << ")\n";
  }
  if (stream) {
    std::printf("  (%s)\n",
                std::string(moe::FinishReasonName(gen->results[0].finish)).c_str());
  }
  const moe::GenerationStats& s = gen->stats;
  std::printf(
      "load %.2f s | prefill %lld tokens, %.1f tokens/s | decode %lld tokens, "
      "%.1f tokens/s\n",
      load_seconds, static_cast<long long>(s.prefill_tokens),
      s.prefill_seconds > 0 ? s.prefill_tokens / s.prefill_seconds : 0.0,
      static_cast<long long>(s.decode_tokens),
      s.decode_seconds > 0 ? s.decode_tokens / s.decode_seconds : 0.0);
  return 0;
}
