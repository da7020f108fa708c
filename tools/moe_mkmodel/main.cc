// moe-mkmodel: writes a random checkpoint (config.json + safetensors) of any
// supported family, size, dtype and shard count, deterministic by seed.
//
//   moe-mkmodel --out /tmp/m --family qwen2_moe --hidden 256 --layers 4
//       --dtype f32 --shards 3 --seed 7
//
// Sizes not given come from the family's small test config (SmallConfig).
// Flag names may be spelled with dashes (--kv-heads) or underscores.
// Exit status: 0 on success, 2 for bad flags, 1 when writing fails.
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <vector>

#include "absl/flags/commandlineflag.h"
#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/reflection.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "core/model_generator.h"
#include "tools/moe_mkmodel/tokenizer_subset.h"

// Optional flags: unset means "the family's small config value".
ABSL_FLAG(std::string, out, "",
          "Output directory (required; created if missing).");
ABSL_FLAG(std::string, family, "mixtral",
          "Model family: mixtral, qwen2_moe, qwen3_moe, olmoe, deepseek_v2 or "
          "deepseek_v3.");
ABSL_FLAG(std::optional<int>, hidden, std::nullopt,
          "Hidden size. Default: the family's small config.");
ABSL_FLAG(std::optional<int>, layers, std::nullopt,
          "Number of decoder layers. Default: the family's small config.");
ABSL_FLAG(std::optional<int>, heads, std::nullopt,
          "Attention heads. Default: the family's small config.");
ABSL_FLAG(std::optional<int>, kv_heads, std::nullopt,
          "Key/value heads (must divide --heads). Default: the family's small "
          "config.");
ABSL_FLAG(std::optional<int>, head_dim, std::nullopt,
          "Per-head dimension; 0 = hidden/heads. Default: the small config's "
          "(32 for qwen3_moe) unless --hidden or --heads is given, then "
          "hidden/heads.");
ABSL_FLAG(std::optional<int>, vocab, std::nullopt,
          "Vocabulary size. Default: the family's small config.");
ABSL_FLAG(std::optional<int>, experts, std::nullopt,
          "Routed experts per MoE layer. Default: the family's small config.");
ABSL_FLAG(std::optional<int>, top_k, std::nullopt,
          "Experts per token. Default: the family's small config.");
ABSL_FLAG(
    std::optional<int>, expert_intermediate, std::nullopt,
    "FFN size of each routed expert. Default: the family's small config.");
ABSL_FLAG(std::optional<int>, dense_intermediate, std::nullopt,
          "FFN size of dense (non-MoE) layers; only with dense layers "
          "(default: the small config's, else --expert_intermediate).");
ABSL_FLAG(std::optional<int>, shared_intermediate, std::nullopt,
          "FFN size of the shared expert (qwen2_moe only). Default: the "
          "family's small config.");
ABSL_FLAG(std::optional<std::string>, mlp_only_layers, std::nullopt,
          "Comma-separated indices of dense layers (qwen2_moe, qwen3_moe), or "
          "'none'. Default: the family's small config (qwen2_moe: 1).");
ABSL_FLAG(std::optional<int>, decoder_sparse_step, std::nullopt,
          "Every n-th layer is a MoE layer (qwen2_moe, qwen3_moe). Default: "
          "the family's small config.");
ABSL_FLAG(std::optional<bool>, norm_topk_prob, std::nullopt,
          "Renormalise the top-k routing weights (--norm_topk_prob, "
          "--nonorm_topk_prob or =true|false; default: the family's; mixtral "
          "always renormalises).");
ABSL_FLAG(bool, tie_embeddings, false, "Share the embedding with lm_head.");
ABSL_FLAG(std::optional<int>, max_positions, std::nullopt,
          "max_position_embeddings (context length). Default: the family's "
          "small config.");
// DeepSeek (deepseek_v2, deepseek_v3) only.
ABSL_FLAG(std::optional<int>, q_lora_rank, std::nullopt,
          "DeepSeek: q LoRA rank; 0 = a plain q_proj (V2-Lite).");
ABSL_FLAG(std::optional<int>, kv_lora_rank, std::nullopt,
          "DeepSeek: rank of the compressed KV latent.");
ABSL_FLAG(std::optional<int>, qk_nope_head_dim, std::nullopt,
          "DeepSeek: per-head query/key dimensions without rope.");
ABSL_FLAG(std::optional<int>, qk_rope_head_dim, std::nullopt,
          "DeepSeek: per-head rope dimensions (even).");
ABSL_FLAG(std::optional<int>, v_head_dim, std::nullopt,
          "DeepSeek: per-head value dimensions.");
ABSL_FLAG(std::optional<int>, n_shared_experts, std::nullopt,
          "DeepSeek: shared experts (each --expert_intermediate wide).");
ABSL_FLAG(std::optional<int>, first_k_dense_replace, std::nullopt,
          "DeepSeek: the first N layers are dense.");
ABSL_FLAG(std::optional<std::string>, topk_method, std::nullopt,
          "DeepSeek: greedy, group_limited_greedy or noaux_tc.");
ABSL_FLAG(std::optional<std::string>, scoring_func, std::nullopt,
          "DeepSeek: softmax or sigmoid.");
ABSL_FLAG(std::optional<int>, n_group, std::nullopt,
          "DeepSeek: expert groups (divides --experts).");
ABSL_FLAG(std::optional<int>, topk_group, std::nullopt,
          "DeepSeek: groups each token may use (<= --n_group).");
ABSL_FLAG(std::optional<double>, routed_scaling_factor, std::nullopt,
          "DeepSeek: multiplier of the routed experts' weights.");
ABSL_FLAG(std::optional<double>, yarn_factor, std::nullopt,
          "DeepSeek: YaRN rope scaling factor; 0 = no rope scaling.");
ABSL_FLAG(std::string, hot_experts, "",
          "Skewed routing: experts (e.g. 0,1) that most tokens pick in every "
          "MoE layer whatever the prompt (every embedding gets a shared "
          "component these experts' gate rows favour), for load-balancing "
          "tests and benchmarks.");
ABSL_FLAG(double, hot_gate_bias, 6.0,
          "With --hot_experts: how strongly the gates favour them (the logit "
          "gain per unit of the normalised hidden state's mean).");
ABSL_FLAG(std::string, dtype, "bf16", "Weight dtype: bf16, f16 or f32.");
ABSL_FLAG(int, shards, 1,
          "Number of safetensors shards; > 1 also writes "
          "model.safetensors.index.json.");
ABSL_FLAG(uint64_t, seed, 0, "Seed; the same seed gives byte-identical files.");
ABSL_FLAG(bool, quiet, false, "No progress line.");
ABSL_FLAG(std::string, tokenizer_from, "",
          "A folder with a real Hugging Face tokenizer.json (BPE) and "
          "tokenizer_config.json: it is cut to --vocab ids and written beside "
          "the model, whose bos/eos ids follow it, so that the model takes "
          "and returns text.");
ABSL_FLAG(std::string, chat_template_file, "",
          "With --tokenizer_from: a Jinja chat template file that replaces the "
          "source's chat_template (e.g. Mixtral's for a Llama vocabulary).");

namespace {

constexpr char kProgram[] = "moe-mkmodel";

[[noreturn]] void FlagError(absl::string_view flag, absl::string_view message) {
  std::fprintf(stderr, "%s: --%s: %s\n", kProgram, std::string(flag).c_str(),
               std::string(message).c_str());
  std::exit(2);
}

// Flags absl's parser handles itself rather than through the registry.
bool IsBuiltinFlag(absl::string_view name) {
  for (absl::string_view builtin :
       {"help", "helpfull", "helpshort", "helppackage", "version",
        "only_check_args", "helpon", "helpmatch", "flagfile", "fromenv",
        "tryfromenv", "undefok"}) {
    if (name == builtin) return true;
  }
  return false;
}

// Rewrites dashed flag names to underscores and rejects unknown flags and
// unparsable values with exit status 2 (absl would exit with 1), so that
// every bad invocation is reported the same way.
std::vector<std::string> NormalizeArgs(int argc, char** argv) {
  std::vector<std::string> args = {argv[0]};
  bool flags_done = false;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (flags_done || arg.size() < 2 || arg[0] != '-') {
      args.push_back(arg);
      continue;
    }
    if (arg == "--") {
      flags_done = true;
      args.push_back(arg);
      continue;
    }
    const size_t dashes = arg[1] == '-' ? 2 : 1;
    const size_t eq = arg.find('=');
    std::string name = absl::StrReplaceAll(
        arg.substr(dashes,
                   eq == std::string::npos ? std::string::npos : eq - dashes),
        {{"-", "_"}});
    absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name);
    if (flag == nullptr && absl::StartsWith(name, "no")) {
      absl::CommandLineFlag* positive =
          absl::FindCommandLineFlag(name.substr(2));
      if (positive != nullptr && (positive->IsOfType<bool>() ||
                                  positive->IsOfType<std::optional<bool>>())) {
        flag = positive;
      }
    }
    if (flag == nullptr && IsBuiltinFlag(name)) {
      // Left to absl (usage and flag-file flags are not in the registry).
      args.push_back("--" + name +
                     (eq == std::string::npos ? "" : arg.substr(eq)));
      continue;
    }
    if (flag == nullptr) {
      std::fprintf(stderr, "%s: unknown flag --%s (see --help)\n", kProgram,
                   name.c_str());
      std::exit(2);
    }
    const bool own = absl::StrContains(flag->Filename(), "moe_mkmodel");
    std::string normalized = "--" + name;
    if (eq != std::string::npos) {
      const std::string value = arg.substr(eq + 1);
      std::string error;
      if (own && !flag->ParseFrom(value, &error)) {
        FlagError(name, absl::StrCat("invalid value \"", value, "\": ", error));
      }
      args.push_back(normalized + "=" + value);
    } else if (flag->IsOfType<bool>()) {
      args.push_back(normalized);  // --flag or --noflag
    } else if (flag->IsOfType<std::optional<bool>>()) {
      // Bare --flag / --noflag set a tri-state flag like a plain bool.
      const bool negated = flag->Name() != name;
      args.push_back(
          absl::StrCat("--", flag->Name(), negated ? "=false" : "=true"));
    } else {
      if (i + 1 >= argc || absl::StartsWith(argv[i + 1], "--")) {
        FlagError(name, "missing value");
      }
      const std::string value = argv[++i];
      std::string error;
      if (own && !flag->ParseFrom(value, &error)) {
        FlagError(name, absl::StrCat("invalid value \"", value, "\": ", error));
      }
      args.push_back(normalized + "=" + value);
    }
  }
  return args;
}

// Writes "written / total, rate" on one stderr line, at most ~5 times/second.
class ProgressLine {
 public:
  void Update(int64_t done, int64_t total) {
    const absl::Time now = absl::Now();
    if (done < total && now - last_ < absl::Milliseconds(200)) return;
    last_ = now;
    const double seconds = absl::ToDoubleSeconds(now - start_);
    const double mb = done / 1e6;
    std::fprintf(stderr, "\rwriting %9.1f / %.1f MB (%3d%%) %7.1f MB/s ", mb,
                 total / 1e6,
                 total > 0 ? static_cast<int>(100.0 * done / total) : 100,
                 seconds > 0 ? mb / seconds : 0.0);
    shown_ = true;
  }
  void Finish() {
    if (shown_) std::fputc('\n', stderr);
    shown_ = false;
  }

 private:
  absl::Time start_ = absl::Now();
  absl::Time last_ = absl::InfinitePast();
  bool shown_ = false;
};

std::vector<int> ParseLayerList(const std::string& text) {
  std::vector<int> layers;
  if (text == "none") return layers;
  for (absl::string_view part : absl::StrSplit(text, ',')) {
    int layer;
    if (!absl::SimpleAtoi(part, &layer) || layer < 0) {
      FlagError("mlp_only_layers",
                absl::StrCat("\"", part, "\" is not a layer index"));
    }
    layers.push_back(layer);
  }
  return layers;
}

moe::DType ParseDTypeFlag(const std::string& text) {
  if (text == "bf16") return moe::DType::kBF16;
  if (text == "f16") return moe::DType::kF16;
  if (text == "f32") return moe::DType::kF32;
  FlagError("dtype",
            absl::StrCat("unknown dtype \"", text, "\" (bf16, f16, f32)"));
}

// Assigns `flag`'s value to `field` when the flag was given.
template <typename T>
void Override(const absl::Flag<std::optional<T>>& flag, T& field) {
  if (std::optional<T> v = absl::GetFlag(flag)) field = *v;
}

// The DeepSeek flags: refused for other families; for DeepSeek they set
// the MLA sizes and routing, then head_dim and num_kv_heads follow from them.
void ApplyDeepseekFlags(const std::string& family_name, moe::ModelConfig& c) {
  const bool any =
      absl::GetFlag(FLAGS_q_lora_rank) || absl::GetFlag(FLAGS_kv_lora_rank) ||
      absl::GetFlag(FLAGS_qk_nope_head_dim) ||
      absl::GetFlag(FLAGS_qk_rope_head_dim) || absl::GetFlag(FLAGS_v_head_dim) ||
      absl::GetFlag(FLAGS_n_shared_experts) ||
      absl::GetFlag(FLAGS_first_k_dense_replace) ||
      absl::GetFlag(FLAGS_topk_method) || absl::GetFlag(FLAGS_scoring_func) ||
      absl::GetFlag(FLAGS_n_group) || absl::GetFlag(FLAGS_topk_group) ||
      absl::GetFlag(FLAGS_routed_scaling_factor) ||
      absl::GetFlag(FLAGS_yarn_factor);
  if (!c.is_deepseek()) {
    if (any) {
      FlagError("family", absl::StrCat("the DeepSeek flags (--kv_lora_rank, "
                                       "--topk_method, ...) need deepseek_v2 "
                                       "or deepseek_v3, not ",
                                       family_name));
    }
    return;
  }
  Override(FLAGS_q_lora_rank, c.mla.q_lora_rank);
  Override(FLAGS_kv_lora_rank, c.mla.kv_lora_rank);
  Override(FLAGS_qk_nope_head_dim, c.mla.qk_nope_head_dim);
  Override(FLAGS_qk_rope_head_dim, c.mla.qk_rope_head_dim);
  Override(FLAGS_v_head_dim, c.mla.v_head_dim);
  Override(FLAGS_first_k_dense_replace, c.first_k_dense_replace);
  Override(FLAGS_n_group, c.n_group);
  Override(FLAGS_topk_group, c.topk_group);
  Override(FLAGS_routed_scaling_factor, c.routed_scaling_factor);
  Override(FLAGS_yarn_factor, c.yarn.factor);
  if (c.yarn.factor < 0) FlagError("yarn_factor", "must be >= 0");
  if (std::optional<int> shared = absl::GetFlag(FLAGS_n_shared_experts)) {
    if (*shared < 0) FlagError("n_shared_experts", "must be >= 0");
    c.shared_expert_intermediate_size = *shared * c.expert_intermediate_size;
  } else {
    // The small config's two shared experts, at the chosen expert size.
    c.shared_expert_intermediate_size =
        c.shared_expert_intermediate_size > 0 ? 2 * c.expert_intermediate_size
                                              : 0;
  }
  if (std::optional<std::string> m = absl::GetFlag(FLAGS_topk_method)) {
    if (*m == "greedy") {
      c.topk_method = moe::TopkMethod::kGreedy;
    } else if (*m == "group_limited_greedy") {
      c.topk_method = moe::TopkMethod::kGroupLimitedGreedy;
    } else if (*m == "noaux_tc") {
      c.topk_method = moe::TopkMethod::kNoauxTc;
    } else {
      FlagError("topk_method",
                absl::StrCat("\"", *m, "\" is not one of greedy, "
                             "group_limited_greedy, noaux_tc"));
    }
  }
  if (std::optional<std::string> f = absl::GetFlag(FLAGS_scoring_func)) {
    if (*f == "softmax") {
      c.scoring_func = moe::ScoringFunc::kSoftmax;
    } else if (*f == "sigmoid") {
      c.scoring_func = moe::ScoringFunc::kSigmoid;
    } else {
      FlagError("scoring_func",
                absl::StrCat("\"", *f, "\" is not one of softmax, sigmoid"));
    }
  }
  c.head_dim = c.mla.qk_head_dim();
  c.num_kv_heads = c.num_heads;
  const bool any_dense = c.NumMoeLayers() < c.num_layers;
  if (!any_dense) {
    c.dense_intermediate_size = 0;
  } else if (!absl::GetFlag(FLAGS_dense_intermediate) &&
             c.dense_intermediate_size == 0) {
    c.dense_intermediate_size = c.expert_intermediate_size;
  }
}

moe::GeneratorSpec SpecFromFlags() {
  const std::string family_name = absl::GetFlag(FLAGS_family);
  absl::StatusOr<moe::ModelFamily> family = moe::ParseFamily(family_name);
  if (!family.ok()) {
    FlagError("family",
              absl::StrCat("unknown family \"", family_name,
                           "\" (mixtral, qwen2_moe, qwen3_moe, olmoe, "
                           "deepseek_v2, deepseek_v3)"));
  }
  moe::GeneratorSpec spec;
  moe::ModelConfig& c = spec.config;
  c = moe::SmallConfig(*family);
  Override(FLAGS_hidden, c.hidden_size);
  Override(FLAGS_layers, c.num_layers);
  Override(FLAGS_heads, c.num_heads);
  Override(FLAGS_kv_heads, c.num_kv_heads);
  Override(FLAGS_vocab, c.vocab_size);
  Override(FLAGS_experts, c.num_experts);
  Override(FLAGS_top_k, c.num_experts_per_tok);
  Override(FLAGS_expert_intermediate, c.expert_intermediate_size);
  Override(FLAGS_max_positions, c.max_position_embeddings);
  Override(FLAGS_decoder_sparse_step, c.decoder_sparse_step);
  Override(FLAGS_norm_topk_prob, c.norm_topk_prob);
  c.tie_word_embeddings = absl::GetFlag(FLAGS_tie_embeddings);

  const std::optional<int> head_dim = absl::GetFlag(FLAGS_head_dim);
  const bool derive_head_dim =
      head_dim ? *head_dim == 0
               : absl::GetFlag(FLAGS_hidden) || absl::GetFlag(FLAGS_heads);
  if (derive_head_dim) {
    if (c.num_heads <= 0 || c.hidden_size % c.num_heads != 0) {
      FlagError("head_dim",
                absl::StrCat("hidden/heads needs --hidden (", c.hidden_size,
                             ") divisible by --heads (", c.num_heads,
                             "); give --head_dim explicitly"));
    }
    c.head_dim = c.hidden_size / c.num_heads;
  } else if (head_dim) {
    c.head_dim = *head_dim;
  }

  if (std::optional<std::string> list = absl::GetFlag(FLAGS_mlp_only_layers)) {
    c.mlp_only_layers = ParseLayerList(*list);
  } else {
    // The small config's dense layers, as far as the model still has them.
    std::erase_if(c.mlp_only_layers,
                  [&](int layer) { return layer >= c.num_layers; });
  }

  const bool any_dense = c.NumMoeLayers() < c.num_layers;
  if (std::optional<int> dense = absl::GetFlag(FLAGS_dense_intermediate)) {
    if (!any_dense) {
      FlagError("dense_intermediate",
                "the model has no dense layers (see --mlp_only_layers and "
                "--decoder_sparse_step)");
    }
    c.dense_intermediate_size = *dense;
  } else if (!any_dense) {
    c.dense_intermediate_size = 0;
  } else if (c.dense_intermediate_size == 0) {
    c.dense_intermediate_size = c.expert_intermediate_size;
  }

  if (std::optional<int> shared = absl::GetFlag(FLAGS_shared_intermediate)) {
    if (*family != moe::ModelFamily::kQwen2Moe) {
      FlagError("shared_intermediate",
                absl::StrCat(family_name,
                             " has no single shared expert (DeepSeek: "
                             "--n_shared_experts)"));
    }
    c.shared_expert_intermediate_size = *shared;
  }

  ApplyDeepseekFlags(family_name, c);

  spec.dtype = ParseDTypeFlag(absl::GetFlag(FLAGS_dtype));
  spec.num_shards = absl::GetFlag(FLAGS_shards);
  spec.seed = absl::GetFlag(FLAGS_seed);
  if (const std::string hot = absl::GetFlag(FLAGS_hot_experts); !hot.empty()) {
    for (absl::string_view part : absl::StrSplit(hot, ',')) {
      int expert;
      if (!absl::SimpleAtoi(part, &expert)) {
        FlagError("hot_experts",
                  absl::StrCat("\"", part, "\" is not an expert index"));
      }
      spec.hot_experts.push_back(expert);
    }
    spec.hot_gate_bias = static_cast<float>(absl::GetFlag(FLAGS_hot_gate_bias));
  }
  return spec;
}

// The flag that sets a GeneratorSpec field named in an error message.
absl::string_view FlagForError(absl::string_view message) {
  static const std::pair<const char*, const char*> kFields[] = {
      {"config.hidden_size", "hidden"},
      {"config.num_layers", "layers"},
      {"config.num_heads", "heads"},
      {"config.num_kv_heads", "kv_heads"},
      {"config.head_dim", "head_dim"},
      {"config.vocab_size", "vocab"},
      {"config.num_experts_per_tok", "top_k"},
      {"config.num_experts", "experts"},
      {"config.expert_intermediate_size", "expert_intermediate"},
      {"config.dense_intermediate_size", "dense_intermediate"},
      {"config.shared_expert_intermediate_size", "shared_intermediate"},
      {"config.mlp_only_layers", "mlp_only_layers"},
      {"config.decoder_sparse_step", "decoder_sparse_step"},
      {"config.norm_topk_prob", "norm_topk_prob"},
      {"config.max_position_embeddings", "max_positions"},
      {"config.bos_token_id", "vocab"},
      {"config.eos_token_ids", "vocab"},
      {"config.mla.q_lora_rank", "q_lora_rank"},
      {"config.mla.kv_lora_rank", "kv_lora_rank"},
      {"config.mla.qk_nope_head_dim", "qk_nope_head_dim"},
      {"config.mla.qk_rope_head_dim", "qk_rope_head_dim"},
      {"config.mla.v_head_dim", "v_head_dim"},
      {"\"n_group\"", "n_group"},
      {"\"topk_group\"", "topk_group"},
      {"num_shards", "shards"},
  };
  for (const auto& [field, flag] : kFields) {
    if (absl::StrContains(message, absl::StrCat(field, " "))) return flag;
  }
  for (absl::string_view flag : {"hot_experts", "hot_gate_bias"}) {
    if (absl::StrContains(message, absl::StrCat("GeneratorSpec: ", flag))) {
      return flag;
    }
  }
  return "";
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Writes a random Mixture-of-Experts checkpoint in the Hugging Face "
      "layout.\n  moe-mkmodel --out DIR [--family mixtral|qwen2_moe|qwen3_moe|"
      "olmoe|deepseek_v2|deepseek_v3] [--hidden N --layers N ...] [--dtype bf16|f16|f32] [--shards N] "
      "[--seed N]");
  // --help lists the flags of this file (absl's default looks for a file
  // named after the program).
  absl::FlagsUsageConfig usage;
  usage.contains_help_flags = [](absl::string_view path) {
    return absl::StrContains(path, "moe_mkmodel/");
  };
  usage.contains_helpshort_flags = usage.contains_help_flags;
  absl::SetFlagsUsageConfig(usage);
  std::vector<std::string> args = NormalizeArgs(argc, argv);
  std::vector<char*> arg_ptrs;
  for (std::string& a : args) arg_ptrs.push_back(a.data());
  std::vector<char*> rest = absl::ParseCommandLine(
      static_cast<int>(arg_ptrs.size()), arg_ptrs.data());
  if (rest.size() > 1) {
    std::fprintf(stderr, "%s: unexpected argument \"%s\" (see --help)\n",
                 kProgram, rest[1]);
    return 2;
  }
  const std::string out = absl::GetFlag(FLAGS_out);
  if (out.empty()) FlagError("out", "is required (the output directory)");

  moe::GeneratorSpec spec = SpecFromFlags();
  std::optional<moe::TokenizerSubset> tokenizer;
  if (const std::string from = absl::GetFlag(FLAGS_tokenizer_from);
      !from.empty()) {
    absl::StatusOr<moe::TokenizerSubset> subset =
        moe::MakeTokenizerSubset(from, spec.config.vocab_size,
                                 absl::GetFlag(FLAGS_chat_template_file));
    if (!subset.ok()) FlagError("tokenizer_from", subset.status().message());
    if (subset->bos_id.has_value()) spec.config.bos_token_id = *subset->bos_id;
    if (subset->eos_id.has_value()) spec.config.eos_token_ids = {*subset->eos_id};
    tokenizer = *std::move(subset);
  }
  ProgressLine line;
  int64_t total_bytes = 0;
  const bool quiet = absl::GetFlag(FLAGS_quiet);
  const absl::Time start = absl::Now();
  const absl::Status status =
      moe::GenerateModel(out, spec, [&](int64_t done, int64_t total) {
        total_bytes = total;
        if (!quiet) line.Update(done, total);
      });
  line.Finish();
  if (!status.ok()) {
    const std::string message(status.message());
    if (absl::IsInvalidArgument(status)) {
      const absl::string_view flag = FlagForError(message);
      if (!flag.empty()) FlagError(flag, message);
      std::fprintf(stderr, "%s: %s\n", kProgram, message.c_str());
      return 2;
    }
    std::fprintf(stderr, "%s: %s\n", kProgram, status.ToString().c_str());
    return 1;
  }
  if (tokenizer.has_value()) {
    if (absl::Status s = moe::WriteTokenizerSubset(*tokenizer, out); !s.ok()) {
      std::fprintf(stderr, "%s: %s\n", kProgram, s.ToString().c_str());
      return 1;
    }
    std::fprintf(stderr, "%s: tokenizer of %s cut to %d ids written to %s\n",
                 kProgram, absl::GetFlag(FLAGS_tokenizer_from).c_str(),
                 spec.config.vocab_size, out.c_str());
  }
  const double seconds = absl::ToDoubleSeconds(absl::Now() - start);
  const int64_t params =
      total_bytes / static_cast<int64_t>(DTypeSize(spec.dtype));
  std::fprintf(stderr,
               "%s: wrote %s: %s, %.3f M parameters, %.1f MB %s in %d shard%s, "
               "%.2f s (%.0f MB/s)\n",
               kProgram, out.c_str(),
               std::string(moe::FamilyName(spec.config.family)).c_str(),
               params / 1e6, total_bytes / 1e6,
               std::string(moe::DTypeName(spec.dtype)).c_str(), spec.num_shards,
               spec.num_shards == 1 ? "" : "s", seconds,
               seconds > 0 ? total_bytes / 1e6 / seconds : 0.0);
  return 0;
}
