// The device-selection layer (core/backends.h) in every build, and the CUDA
// backend through it when a GPU is usable:
// - device specs parse, and a CUDA device this process cannot use is refused
//   with FAILED_PRECONDITION saying why (no CUDA in this build, no driver,
//   ordinal out of range), by the library and by the programs' --device;
// - on a GPU: the single-process engine against ../shared/fixtures (greedy
//   tokens identical, logits within 5e-2: the fixtures' tolerance for a
//   BF16 computation), the GPU forward pass with a host MoeExecutor (the
//   attention-server arrangement) against the CPU pass, and the expert
//   backend against the CPU one.
// Without a usable GPU the GPU cases skip with the reason.
#include <cmath>
#include <cstdio>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/backends.h"
#include "core/engine.h"
#include "core/generator.h"
#include "core/local_moe_executor.h"
#include "core/sampling.h"
#include "gtest/gtest.h"
#include "tests/gpu/gpu_test_util.h"
#include "tests/kernel_test_util.h"
#include "tests/process_util.h"
#include "tests/reference_model.h"
#include "tests/test_util.h"

namespace moe {
namespace {

using ::moe::testing::FixtureCase;
using ::moe::testing::FixtureDir;
using ::moe::testing::LoadFixtureCases;
using ::moe::testing::LogitsNear;

// The fixtures' README: 5e-2 where the computation itself is BF16 (the GPU
// rounds GEMM inputs and expert activations to BF16).
constexpr double kGpuLogitTolerance = 5e-2;

TEST(DeviceSpecTest, ParsesCpuAndCudaDevices) {
  absl::StatusOr<DeviceSpec> cpu = ParseDeviceSpec("cpu");
  ASSERT_TRUE(cpu.ok()) << cpu.status();
  EXPECT_FALSE(cpu->is_cuda());
  EXPECT_EQ(cpu->ToString(), "cpu");
  absl::StatusOr<DeviceSpec> cuda = ParseDeviceSpec("cuda");
  ASSERT_TRUE(cuda.ok()) << cuda.status();
  EXPECT_TRUE(cuda->is_cuda());
  EXPECT_EQ(cuda->ordinal, 0);
  absl::StatusOr<DeviceSpec> third = ParseDeviceSpec("cuda:3");
  ASSERT_TRUE(third.ok()) << third.status();
  EXPECT_EQ(third->ordinal, 3);
  EXPECT_EQ(third->ToString(), "cuda:3");
}

TEST(DeviceSpecTest, RejectsOtherTextNamingIt) {
  for (const char* bad : {"", "gpu", "CUDA", "cuda:", "cuda:-1", "cuda:x",
                          "cuda:1.5", "cuda:99999", "cpu:0", " cuda"}) {
    SCOPED_TRACE(bad);
    absl::StatusOr<DeviceSpec> spec = ParseDeviceSpec(bad);
    ASSERT_FALSE(spec.ok());
    EXPECT_EQ(spec.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(spec.status().message().find(absl::StrCat("\"", bad, "\"")),
              absl::string_view::npos)
        << spec.status();
  }
}

TEST(GpuInventoryTest, SaysWhetherTheBackendIsBuiltAndWhyNoDevice) {
  const GpuInventory gpus = ProbeGpus();
  EXPECT_EQ(gpus.backend_built, MOE_TEST_CUDA_BUILT != 0);
  if (gpus.devices.empty()) {
    EXPECT_FALSE(gpus.why_none.empty());
  } else {
    EXPECT_TRUE(gpus.backend_built);
  }
  std::printf("[gpu] backend built: %s; devices: %zu%s%s\n",
              gpus.backend_built ? "yes" : "no", gpus.devices.size(),
              gpus.devices.empty() ? "; why none: " : "",
              gpus.why_none.c_str());
}

TEST(CheckDeviceUsableTest, CpuIsAlwaysUsable) {
  EXPECT_TRUE(CheckDeviceUsable(DeviceSpec{}).ok());
}

TEST(CheckDeviceUsableTest, UnusableCudaDeviceIsRefusedWithTheReason) {
  const GpuInventory gpus = ProbeGpus();
  DeviceSpec past_the_end;
  past_the_end.kind = DeviceSpec::Kind::kCuda;
  past_the_end.ordinal = static_cast<int>(gpus.devices.size());
  const absl::Status status = CheckDeviceUsable(past_the_end);
  ASSERT_EQ(status.code(), absl::StatusCode::kFailedPrecondition) << status;
  EXPECT_NE(status.message().find(past_the_end.ToString()),
            absl::string_view::npos)
      << status;
  if (gpus.devices.empty()) {
    EXPECT_NE(status.message().find(gpus.why_none), absl::string_view::npos)
        << status;
  }
}

TEST(CheckDeviceUsableTest, FactoriesRefuseAnUnusableDevice) {
  const GpuInventory gpus = ProbeGpus();
  DeviceSpec past_the_end;
  past_the_end.kind = DeviceSpec::Kind::kCuda;
  past_the_end.ordinal = static_cast<int>(gpus.devices.size());
  absl::StatusOr<std::unique_ptr<ExpertFfnBackend>> ffn =
      CreateExpertFfnBackend(past_the_end, {}, nullptr);
  EXPECT_EQ(ffn.status().code(), absl::StatusCode::kFailedPrecondition);
  EngineOptions options;
  options.model_dir = FixtureDir("tiny-mixtral");
  options.device = past_the_end;
  absl::StatusOr<std::unique_ptr<Engine>> engine = Engine::Load(options);
  ASSERT_FALSE(engine.ok());
  EXPECT_EQ(engine.status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST(CheckDeviceUsableTest, CpuForwardPassNeedsAMoeExecutor) {
  absl::StatusOr<std::unique_ptr<ForwardPass>> pass =
      CreateForwardPass(DeviceSpec{}, nullptr, nullptr, nullptr, nullptr);
  EXPECT_EQ(pass.status().code(), absl::StatusCode::kInvalidArgument);
}

// The programs refuse a bad or unusable --device before loading anything.
TEST(DeviceFlagTest, ProgramsRefuseABadOrUnusableDevice) {
  const GpuInventory gpus = ProbeGpus();
  const std::string unusable =
      absl::StrCat("cuda:", gpus.devices.size());
  const std::string model = FixtureDir("tiny-mixtral");
  const std::string bin = absl::StrCat(MOE_BINARY_DIR, "/bin/");
  struct Case {
    std::vector<std::string> argv;
    std::string expected;
  };
  const Case cases[] = {
      {{bin + "expert_server", "--model", model, "--experts", "0:0",
        "--listen", "127.0.0.1:0", "--device", "gpu"},
       "--device: device \"gpu\" is not one of"},
      {{bin + "expert_server", "--model", model, "--experts", "0:0",
        "--listen", "127.0.0.1:0", "--device", unusable},
       "--device: device " + unusable + " asked for"},
      {{bin + "moe-generate", "--model", model, "--prompt_ids", "1,2,3",
        "--device", unusable},
       "device " + unusable + " asked for"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.argv.back());
    const ::moe::testing::ProcessResult result =
        ::moe::testing::RunProcess(c.argv);
    EXPECT_NE(result.exit_code, 0) << result.err;
    EXPECT_NE(result.err.find(c.expected), std::string::npos) << result.err;
  }
}

GenerationRequest GreedyRequest(const FixtureCase& fc) {
  GenerationRequest request;
  request.prompt = fc.prompt;
  request.max_tokens = static_cast<int>(fc.steps.size());
  request.ignore_eos = true;
  request.capture_logits = true;
  return request;
}

class GpuEngineFixtureTest : public ::testing::TestWithParam<std::string> {};

// The whole model on the GPU (routed experts included) against the
// fixtures: every case alone, then all cases in one batch, then with
// 3-token prefill chunks (decode and prefill attention kernels, chunks that
// start mid-block).
TEST_P(GpuEngineFixtureTest, GreedyTokensAndLogitsMatch) {
  MOE_SKIP_WITHOUT_GPU();
  const std::string dir = FixtureDir(GetParam());
  absl::StatusOr<std::vector<FixtureCase>> cases = LoadFixtureCases(dir);
  ASSERT_TRUE(cases.ok()) << cases.status();
  EngineOptions options;
  options.model_dir = dir;
  options.device.kind = DeviceSpec::Kind::kCuda;
  options.kv_cache_bytes = int64_t{256} << 20;
  absl::StatusOr<std::unique_ptr<Engine>> engine = Engine::Load(options);
  ASSERT_TRUE(engine.ok()) << engine.status();
  for (int prefill_chunk : {0, 3}) {
    GeneratorOptions gen_options;
    gen_options.prefill_chunk_tokens = prefill_chunk;
    std::vector<GenerationRequest> requests;
    for (const FixtureCase& fc : *cases) requests.push_back(GreedyRequest(fc));
    for (size_t c = 0; c <= cases->size(); ++c) {
      // c < size: case c alone; c == size: every case in one batch.
      std::vector<GenerationRequest> batch =
          c < cases->size() ? std::vector<GenerationRequest>{requests[c]}
                            : requests;
      SCOPED_TRACE(::testing::Message() << "prefill chunk " << prefill_chunk
                                        << ", batch " << c);
      absl::StatusOr<BatchGeneration> gen =
          GenerateBatch(**engine, batch, gen_options);
      ASSERT_TRUE(gen.ok()) << gen.status();
      ASSERT_EQ(gen->results.size(), batch.size());
      for (size_t r = 0; r < batch.size(); ++r) {
        const FixtureCase& fc = (*cases)[c < cases->size() ? c : r];
        EXPECT_EQ(gen->results[r].output, fc.Tokens());
        ASSERT_EQ(gen->results[r].logits.size(), fc.steps.size());
        for (size_t s = 0; s < fc.steps.size(); ++s) {
          EXPECT_TRUE(LogitsNear(gen->results[r].logits[s], fc.steps[s].logits,
                                 kGpuLogitTolerance))
              << "result " << r << ", step " << s;
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, GpuEngineFixtureTest,
                         ::testing::Values("tiny-mixtral", "tiny-qwen2-moe"),
                         [](const auto& info) {
                           std::string name = info.param;
                           for (char& ch : name) {
                             if (ch == '-') ch = '_';
                           }
                           return name;
                         });

// The GPU forward pass with the routed experts on the host (what a GPU
// attention server does with the router) against the CPU pass: logits of a
// prefill of two sequences and three decode steps within tolerance.
TEST(GpuForwardPassTest, HostMoeExecutorMatchesCpuPass) {
  MOE_SKIP_WITHOUT_GPU();
  const std::string dir = FixtureDir("tiny-qwen2-moe");
  absl::StatusOr<ModelWeights> weights =
      LoadModelWeightsFromDir(dir, WeightSelection::Full(), true);
  ASSERT_TRUE(weights.ok()) << weights.status();
  const KvCacheShape shape = KvCacheShape::ForModel(weights->config, 16);
  ThreadPool pool(2);
  LocalMoeExecutor moe(&*weights, &pool);
  auto make_cache = [&] {
    absl::StatusOr<std::unique_ptr<KvCache>> cache =
        KvCache::Create(shape, int64_t{64} << 20);
    EXPECT_TRUE(cache.ok()) << cache.status();
    return *std::move(cache);
  };
  std::unique_ptr<KvCache> cpu_cache = make_cache(), gpu_cache = make_cache();
  DeviceSpec gpu;
  gpu.kind = DeviceSpec::Kind::kCuda;
  absl::StatusOr<std::unique_ptr<ForwardPass>> cpu_pass =
      CreateForwardPass(DeviceSpec{}, &*weights, cpu_cache.get(), &moe, &pool);
  absl::StatusOr<std::unique_ptr<ForwardPass>> gpu_pass =
      CreateForwardPass(gpu, &*weights, gpu_cache.get(), &moe, &pool);
  ASSERT_TRUE(cpu_pass.ok()) << cpu_pass.status();
  ASSERT_TRUE(gpu_pass.ok()) << gpu_pass.status();
  for (KvCache* cache : {cpu_cache.get(), gpu_cache.get()}) {
    ASSERT_TRUE(cache->AddSequence(1).ok());
    ASSERT_TRUE(cache->AddSequence(2).ok());
  }
  const std::vector<int32_t> a = {3, 17, 250, 9, 41, 77, 5, 18, 2, 90, 11,
                                  64, 33, 7, 21, 8, 19, 4};
  const std::vector<int32_t> b = {120, 6, 45};
  std::vector<SequenceChunk> step = {{1, a, true}, {2, b, true}};
  for (int s = 0; s < 4; ++s) {
    SCOPED_TRACE(::testing::Message() << "step " << s);
    absl::StatusOr<std::vector<float>> want = (*cpu_pass)->Forward(step);
    absl::StatusOr<std::vector<float>> got = (*gpu_pass)->Forward(step);
    ASSERT_TRUE(want.ok()) << want.status();
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_TRUE(LogitsNear(*got, *want, kGpuLogitTolerance));
    // Decode: each sequence's next token is its CPU argmax.
    const int vocab = weights->config.vocab_size;
    static std::vector<int32_t> next[2];
    for (int q = 0; q < 2; ++q) {
      next[q] = {ArgMax(absl::MakeConstSpan(*want).subspan(q * vocab, vocab))};
    }
    step = {{1, next[0], true}, {2, next[1], true}};
  }
}

// The expert backend on the GPU against the CPU backend: groups of 1, 5 and
// 300 tokens of three random BF16 experts. Tolerance: the GPU rounds the
// inputs, the gate|up output, the activation and the output to BF16 (each
// 2^-8 relative), so 3e-2 relative to the output's largest magnitude.
TEST(GpuExpertBackendTest, MatchesCpuBackend) {
  MOE_SKIP_WITHOUT_GPU();
  constexpr int64_t kHidden = 256, kInter = 384;
  std::mt19937 rng(7);
  std::vector<::moe::testing::OwnedTensor> owned;
  std::vector<FfnWeights> experts(3);
  for (FfnWeights& e : experts) {
    owned.emplace_back(DType::kBF16, std::vector<int64_t>{kInter, kHidden},
                       ::moe::testing::RandomValues(kInter * kHidden, rng, -0.05f, 0.05f));
    e.gate = owned.back().view();
    owned.emplace_back(DType::kBF16, std::vector<int64_t>{kInter, kHidden},
                       ::moe::testing::RandomValues(kInter * kHidden, rng, -0.05f, 0.05f));
    e.up = owned.back().view();
    owned.emplace_back(DType::kBF16, std::vector<int64_t>{kHidden, kInter},
                       ::moe::testing::RandomValues(kHidden * kInter, rng, -0.05f, 0.05f));
    e.down = owned.back().view();
  }
  const std::vector<const FfnWeights*> hosted = {&experts[0], &experts[1],
                                                 &experts[2]};
  DeviceSpec gpu;
  gpu.kind = DeviceSpec::Kind::kCuda;
  absl::StatusOr<std::unique_ptr<ExpertFfnBackend>> cuda =
      CreateExpertFfnBackend(gpu, hosted, nullptr);
  ASSERT_TRUE(cuda.ok()) << cuda.status();
  std::unique_ptr<ExpertFfnBackend> cpu = CreateCpuExpertFfn(nullptr);
  const int64_t tokens[] = {1, 5, 300};
  std::vector<std::vector<float>> x(3), want(3), got(3);
  std::vector<FfnGroup> cpu_groups, gpu_groups;
  for (int g = 0; g < 3; ++g) {
    x[g] = ::moe::testing::RandomValues(tokens[g] * kHidden, rng);
    want[g].assign(tokens[g] * kHidden, 0.0f);
    got[g].assign(tokens[g] * kHidden, 0.0f);
    cpu_groups.push_back({&experts[g], x[g].data(), tokens[g], want[g].data()});
    gpu_groups.push_back({&experts[g], x[g].data(), tokens[g], got[g].data()});
  }
  ASSERT_TRUE(cpu->Run(cpu_groups).ok());
  ASSERT_TRUE((*cuda)->Run(gpu_groups).ok());
  for (int g = 0; g < 3; ++g) {
    double scale = 0;
    for (float v : want[g]) scale = std::max(scale, std::fabs(double{v}));
    for (size_t i = 0; i < want[g].size(); ++i) {
      ASSERT_NEAR(got[g][i], want[g][i], 3e-2 * scale)
          << "group " << g << ", element " << i;
    }
  }
  // An expert that was not uploaded is refused, not read out of bounds.
  FfnWeights stranger = experts[0];
  const FfnGroup bad = {&stranger, x[0].data(), tokens[0], got[0].data()};
  EXPECT_EQ((*cuda)->Run(absl::MakeConstSpan(&bad, 1)).code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace moe
