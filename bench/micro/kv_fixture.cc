#include "bench/micro/kv_fixture.h"

#include <chrono>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "bench/micro/micro_util.h"
#include "core/attention_role.h"
#include "core/cpu/attention.h"
#include "core/model_generator.h"
#include "core/rpc/channel_util.h"
#include "core/rpc/server_util.h"
#include "core/status_macros.h"

namespace moe::microbench {
namespace {

// The K/V layout of the cluster bench model (bench_common.cc BenchSpec: 8
// layers, 2 K/V heads of 128): 16 KiB per token, 64 MiB for a 4096-token
// prompt, as kv_transfer_gbps moves. Everything else is as small as the
// format allows.
GeneratorSpec KvModelSpec() {
  GeneratorSpec spec;
  spec.config = SmallConfig(ModelFamily::kMixtral);
  spec.config.hidden_size = 256;
  spec.config.num_layers = 8;
  spec.config.num_heads = 2;
  spec.config.num_kv_heads = 2;
  spec.config.head_dim = 128;
  spec.config.vocab_size = 64;
  spec.config.num_experts = 2;
  spec.config.num_experts_per_tok = 1;
  spec.config.expert_intermediate_size = 64;
  spec.config.max_position_embeddings = 2 * kMaxPromptTokens;
  spec.dtype = DType::kBF16;
  spec.seed = 71;
  return spec;
}

constexpr int kBlockSize = 16;

}  // namespace

void ReservationObserver::OnReserved(const KvReservation& reservation) {
  absl::MutexLock lock(&mu_);
  reservation_ = reservation;
  reserved_ = true;
}

void ReservationObserver::OnFinish(const absl::Status& status,
                                   FinishReason reason,
                                   const SequenceUsage& usage) {
  absl::MutexLock lock(&mu_);
  status_ = status;
  finished_ = true;
}

absl::StatusOr<KvReservation> ReservationObserver::WaitReserved(
    double timeout_seconds) {
  absl::MutexLock lock(&mu_);
  auto ready = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) {
    return reserved_ || finished_;
  };
  mu_.AwaitWithTimeout(absl::Condition(&ready), absl::Seconds(timeout_seconds));
  if (reserved_) return reservation_;
  if (finished_) return status_;
  return absl::DeadlineExceededError("no K/V reservation in time");
}

absl::Status ReservationObserver::WaitFinished(double timeout_seconds) {
  absl::MutexLock lock(&mu_);
  mu_.AwaitWithTimeout(absl::Condition(&finished_),
                       absl::Seconds(timeout_seconds));
  if (!finished_) {
    return absl::DeadlineExceededError("the sequence did not end in time");
  }
  return status_;
}

absl::Status KvTransferFixture::NoMoe::RunMoe(int layer, const float* x,
                                              int64_t tokens, float* out) {
  return absl::FailedPreconditionError(
      "moe-microbench: the K/V benchmarks run no decode step");
}

absl::StatusOr<std::unique_ptr<KvTransferFixture>> KvTransferFixture::Create() {
  if (ScratchDir().empty()) {
    return absl::InternalError("no scratch directory for the model");
  }
  const GeneratorSpec spec = KvModelSpec();
  const std::string dir = ScratchDir() + "/kv-model";
  RETURN_IF_ERROR(GenerateModel(dir, spec));
  const KvCacheShape shape = KvCacheShape::ForModel(spec.config, kBlockSize);
  const int64_t prompt_blocks =
      (kMaxPromptTokens + 1 + kBlockSize - 1) / kBlockSize;

  std::unique_ptr<KvTransferFixture> f(new KvTransferFixture());
  f->vocab_ = spec.config.vocab_size;
  f->registry_ = std::make_shared<prometheus::Registry>();
  f->metrics_ = std::make_unique<AttentionMetrics>(
      *f->registry_, std::string(AttentionRoleName(AttentionRole::kDecode)));
  AttentionEngineOptions options;
  options.model_dir = dir;
  options.num_threads = 1;
  options.kv_block_size = kBlockSize;
  options.kv_cache_bytes = 2 * prompt_blocks * shape.BytesPerBlock();
  options.prefix_cache = false;
  options.kv_lease_seconds = 600;  // a reservation outlives one benchmark run
  ASSIGN_OR_RETURN(f->engine_, AttentionEngine::Load(options, &f->moe_));
  f->service_ = std::make_unique<AttentionServiceImpl>(
      f->engine_.get(), AttentionRole::kDecode, f->metrics_.get());
  ASSIGN_OR_RETURN(StartedServer started,
                   StartGrpcServer("attention server (decode)", "127.0.0.1:0",
                                   {f->service_.get()}));
  f->server_ = std::move(started.server);
  f->address_ = absl::StrCat("127.0.0.1:", started.port);
  f->stub_ = v1::AttentionService::NewStub(MakeChannel(f->address_));

  ASSIGN_OR_RETURN(
      f->source_,
      KvCache::Create(shape, prompt_blocks * shape.BytesPerBlock()));
  RETURN_IF_ERROR(f->source_->AddSequence(0));
  RETURN_IF_ERROR(f->source_->Append(0, kMaxPromptTokens));
  f->source_table_ = f->source_->BlockTable(0);
  const int64_t kv_dim = int64_t{shape.num_kv_heads} * shape.head_dim;
  const std::vector<float> k = RandomFloats(kMaxPromptTokens * kv_dim, 72);
  const std::vector<float> v = RandomFloats(kMaxPromptTokens * kv_dim, 73);
  for (int layer = 0; layer < shape.num_layers; ++layer) {
    cpu::WriteKv(*f->source_, layer, f->source_table_, 0, kMaxPromptTokens,
                 k.data(), v.data(), kv_dim);
  }
  return f;
}

KvTransferFixture::~KvTransferFixture() {
  stub_.reset();
  if (server_ != nullptr) {
    server_->Shutdown(std::chrono::system_clock::now());
    server_->Wait();
  }
}

int64_t KvTransferFixture::PromptBytes(int tokens) const {
  return int64_t{source_->BlocksFor(tokens)} * num_layers() * block_bytes();
}

std::vector<const float*> KvTransferFixture::SourceBlocks(
    int layer, int num_blocks) const {
  std::vector<const float*> blocks;
  blocks.reserve(num_blocks);
  for (int i = 0; i < num_blocks; ++i) {
    blocks.push_back(source_->BlockData(layer, source_table_[i]));
  }
  return blocks;
}

absl::StatusOr<AttentionEngine::SequenceId> KvTransferFixture::Submit(
    int tokens, uint32_t seed, std::shared_ptr<ReservationObserver> observer) {
  if (tokens < 1 || tokens > kMaxPromptTokens) {
    return absl::InvalidArgumentError(absl::StrCat(
        "prompt of ", tokens, " tokens; 1 to ", kMaxPromptTokens, " allowed"));
  }
  SequenceSpec spec;
  spec.role = SequenceRole::kRemotePrefill;
  spec.request.max_tokens = 1;
  spec.request.ignore_eos = true;
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int32_t> token(3, vocab_ - 1);
  spec.request.prompt.resize(tokens);
  for (int32_t& t : spec.request.prompt) t = token(rng);
  return engine_->Submit(std::move(spec), std::move(observer));
}

}  // namespace moe::microbench
