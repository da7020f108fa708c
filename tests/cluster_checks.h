// Checks shared by the in-process and the end-to-end cluster tests, run
// against any gateway.
#ifndef MOE_TESTS_CLUSTER_CHECKS_H_
#define MOE_TESTS_CLUSTER_CHECKS_H_

#include <memory>
#include <string>
#include <vector>

#include "core/engine.h"

#include "moe/v1/generate.grpc.pb.h"

namespace moe::testing {

// The single-process engine on the fixture or model at `model_dir` (one
// thread, 8 MiB of KV cache), for reference tokens.
std::unique_ptr<Engine> LoadReferenceEngine(const std::string& model_dir);
// Greedy tokens of `engine` for `prompt` alone (EOS ignored).
std::vector<int32_t> EngineTokens(Engine& engine,
                                  const std::vector<int32_t>& prompt,
                                  int max_tokens);

// Eight concurrent greedy streams of different prompt and output lengths
// (the fixture's cases plus five more prompts) through `gateway`: every
// stream's tokens equal the single-process engine's for that prompt alone,
// the fixture cases also equal the fixture's tokens, and each stream has
// exactly one finish message, usage that counts its tokens, and one
// request id throughout. `fixture` names a folder of tests/data/fixtures.
void ExpectConcurrentStreamsEqualTheEngine(v1::Inference::Stub& gateway,
                                           const std::string& fixture);

// Every invalid request of SPEC §3 (ids outside the vocabulary, NaN, Inf
// and negative sampling values, top_p outside (0, 1], max_tokens 0 or over
// the context length, an empty prompt, ...) gets INVALID_ARGUMENT naming
// the field, and a valid request right after each one is served. The model
// behind `gateway` must be tiny-mixtral (vocabulary 512, context 4096).
void ExpectInvalidRequestsRefused(v1::Inference::Stub& gateway);

}  // namespace moe::testing

#endif  // MOE_TESTS_CLUSTER_CHECKS_H_
