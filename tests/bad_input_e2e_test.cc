// Bad input end to end (issue: reliability): one real 1p1d cluster on
// 127.0.0.1, started by the real launcher, and a table of bad inputs across
// every API:
//   * the public Generate (ids outside the vocabulary, NaN/Inf/negative
//     sampling values, top_p outside (0, 1], max_tokens 0 or past the
//     context, a prompt longer than the context, an empty prompt, ...);
//   * the internal RPCs, called directly on each server's address: router
//     RunMoe/MoeStream, expert RunExperts/ExpertStream, attention
//     Generate/Prefill/TransferKv (unknown layer or expert, wrong tensor
//     shape, dtype or byte size, non-finite hidden states, unknown or
//     mismatched reservations, a message over kMaxMessageBytes);
//   * malformed files and bad flags: the real binaries run against a broken
//     topology, config.json or safetensors file, or with a bad flag.
// Each RPC case gets the right status code and a message naming the field;
// each process case exits non-zero naming the file, field or flag. Every few
// cases, and at the end, every server still reports SERVING with the pid it
// started with, and a valid Generate through the gateway succeeds. One line
// per case ("[bad-input] API | case -> CODE -> message") goes to the log.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "core/model_config.h"
#include "core/rpc/channel_util.h"
#include "core/rpc/server_util.h"
#include "gmock/gmock.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "gtest/gtest.h"
#include "moe/v1/attention.grpc.pb.h"
#include "moe/v1/expert.grpc.pb.h"
#include "moe/v1/router.grpc.pb.h"
#include "tests/generate_client.h"
#include "tests/launched_cluster.h"
#include "tests/process_util.h"
#include "tests/test_util.h"

namespace moe {
namespace {

using ::moe::testing::FixtureDir;
using ::moe::testing::GreedyRequest;
using ::moe::testing::LaunchedCluster;
using ::moe::testing::RunGenerate;
using ::moe::testing::StreamResult;
using ::testing::HasSubstr;

constexpr char kFixture[] = "tiny-mixtral";

std::string CodeName(grpc::StatusCode code) {
  return absl::StatusCodeToString(static_cast<absl::StatusCode>(code));
}

// The first line of `text` that contains `needle` (or the first line).
std::string LineWith(const std::string& text, const std::string& needle) {
  std::vector<std::string> lines = absl::StrSplit(text, '\n');
  for (const std::string& line : lines) {
    if (absl::StrContains(line, needle)) return line;
  }
  return lines.empty() ? "" : lines[0];
}

void SetDeadline(grpc::ClientContext& context, double seconds = 30) {
  context.set_deadline(
      std::chrono::system_clock::now() +
      std::chrono::milliseconds(static_cast<int>(seconds * 1000)));
}

// A [rows, cols] F32 tensor of `value`.
v1::Tensor F32Tensor(int64_t rows, int64_t cols, float value = 0.25f) {
  v1::Tensor t;
  t.set_dtype(v1::DTYPE_F32);
  t.add_shape(rows);
  t.add_shape(cols);
  std::vector<float> data(rows * cols, value);
  t.set_data(reinterpret_cast<const char*>(data.data()),
             data.size() * sizeof(float));
  return t;
}

// An RPC made with bad input: its status must have `code` and a message
// containing `field`.
struct RpcCase {
  std::string api;  // "RouterService.RunMoe", ...
  std::string name;
  std::function<grpc::Status()> run;
  grpc::StatusCode code;
  std::string field;
};

// A process run with a bad file or flag: it must exit non-zero (not by a
// signal) and say `text` on stderr.
struct ExitCase {
  std::string name;
  std::vector<std::string> argv;
  std::string text;
};

class BadInputTest : public ::testing::Test {
 protected:
  void SetUp() override {
    model_dir_ = FixtureDir(kFixture);
    absl::StatusOr<ModelConfig> config = LoadModelConfig(model_dir_);
    ASSERT_TRUE(config.ok()) << config.status();
    config_ = *config;
    cluster_ = LaunchedCluster::Start("deploy/local/1p1d.json", model_dir_);
    ASSERT_NE(cluster_, nullptr);
    for (const std::string& name : cluster_->names()) {
      pids_[name] = cluster_->pid(name);
      ASSERT_GT(pids_[name], 0) << name;
      if (absl::StartsWith(name, "expert")) experts_.push_back(name);
    }
    ASSERT_EQ(experts_.size(), 2u);
    ASSERT_EQ(cluster_->attention_names("prefill").size(), 1u);
    ASSERT_EQ(cluster_->attention_names("decode").size(), 1u);
    prefill_ = cluster_->attention_names("prefill")[0];
    decode_ = cluster_->attention_names("decode")[0];
    router_ =
        v1::RouterService::NewStub(MakeChannel(cluster_->address("router")));
    expert_ =
        v1::ExpertService::NewStub(MakeChannel(cluster_->address(experts_[0])));
    prefill_stub_ =
        v1::AttentionService::NewStub(MakeChannel(cluster_->address(prefill_)));
    decode_stub_ =
        v1::AttentionService::NewStub(MakeChannel(cluster_->address(decode_)));
    block_size_ = cluster_->AttentionLoad(decode_).kv_block_size();
    ASSERT_GT(block_size_, 0);
  }

  void TearDown() override {
    router_.reset();
    expert_.reset();
    prefill_stub_.reset();
    decode_stub_.reset();
    cluster_.reset();  // EXPECTs the launcher to exit 0
  }

  // Every server SERVING with the pid it started with (none crashed and was
  // restarted), and a valid Generate through the gateway succeeds.
  void ExpectClusterHealthy(const std::string& after) {
    for (const std::string& name : cluster_->names()) {
      const absl::Status serving = CheckServing(cluster_->address(name), 10);
      EXPECT_TRUE(serving.ok())
          << "after " << after << ": " << name << ": " << serving;
      EXPECT_EQ(cluster_->pid(name), pids_[name])
          << "after " << after << ": " << name << " was restarted";
    }
    const StreamResult ok =
        RunGenerate(cluster_->gateway(), GreedyRequest({1, 5, 9, 14}, 3), 60);
    EXPECT_TRUE(ok.status.ok())
        << "after " << after << ": " << ok.status.error_message();
    EXPECT_EQ(ok.tokens.size(), 3u) << "after " << after;
  }

  void RunRpcCases(const std::vector<RpcCase>& cases) {
    for (size_t i = 0; i < cases.size(); ++i) {
      const RpcCase& c = cases[i];
      const grpc::Status status = c.run();
      std::printf("[bad-input] %s | %s -> %s -> %s\n", c.api.c_str(),
                  c.name.c_str(), CodeName(status.error_code()).c_str(),
                  status.error_message().substr(0, 300).c_str());
      std::fflush(stdout);
      EXPECT_EQ(status.error_code(), c.code)
          << c.api << " | " << c.name << ": " << status.error_message();
      EXPECT_THAT(status.error_message(), HasSubstr(c.field))
          << c.api << " | " << c.name;
      ++cases_run_;
      if (cases_run_ % 4 == 0) ExpectClusterHealthy(c.api + " | " + c.name);
    }
  }

  void RunExitCases(const std::vector<ExitCase>& cases) {
    for (const ExitCase& c : cases) {
      const testing::ProcessResult r = testing::RunProcess(c.argv, {}, 120);
      std::printf("[bad-input] process | %s -> exit %d -> %s\n", c.name.c_str(),
                  r.exit_code, LineWith(r.err, c.text).substr(0, 300).c_str());
      std::fflush(stdout);
      EXPECT_GT(r.exit_code, 0) << c.name << " (-1: killed or timed out)\n"
                                << r.err;
      EXPECT_THAT(r.err, HasSubstr(c.text)) << c.name;
      ++cases_run_;
      if (cases_run_ % 4 == 0) ExpectClusterHealthy(c.name);
    }
  }

  // A generate request the internal APIs accept: validated fields, a seed
  // and a request id (as the gateway sends it).
  v1::GenerateRequest InternalRequest(int prompt_tokens, int max_tokens) {
    std::vector<int32_t> prompt(prompt_tokens);
    for (int i = 0; i < prompt_tokens; ++i) prompt[i] = 3 + (i * 7) % 400;
    v1::GenerateRequest r = GreedyRequest(prompt, max_tokens);
    r.set_request_id(absl::StrCat("bad-input-", ++request_ids_));
    r.mutable_sampling()->set_seed(7);
    return r;
  }

  // A decode-side reservation: AttentionService.Generate with
  // await_transfer on the decode server, its first message read.
  struct Reservation {
    std::unique_ptr<grpc::ClientContext> context;
    std::unique_ptr<grpc::ClientReader<v1::AttentionGenerateResponse>> reader;
    v1::KvReservation reservation;
    // Reads the stream to its end (the K/V never completes here).
    grpc::Status Finish() {
      v1::AttentionGenerateResponse m;
      while (reader->Read(&m)) {
      }
      return reader->Finish();
    }
  };
  std::unique_ptr<Reservation> Reserve(int prompt_tokens) {
    auto r = std::make_unique<Reservation>();
    r->context = std::make_unique<grpc::ClientContext>();
    SetDeadline(*r->context, 60);
    v1::AttentionGenerateRequest request;
    *request.mutable_request() = InternalRequest(prompt_tokens, 4);
    request.set_await_transfer(true);
    r->reader = decode_stub_->Generate(r->context.get(), request);
    v1::AttentionGenerateResponse first;
    if (!r->reader->Read(&first) || !first.has_reservation()) {
      ADD_FAILURE() << "no reservation from " << decode_ << ": "
                    << r->reader->Finish().error_message();
      return nullptr;
    }
    r->reservation = first.reservation();
    return r;
  }

  // Sends `chunks` on one TransferKv call to the decode server.
  grpc::Status TransferKv(const std::vector<v1::KvTransferChunk>& chunks) {
    grpc::ClientContext context;
    SetDeadline(context);
    v1::KvTransferAck ack;
    std::unique_ptr<grpc::ClientWriter<v1::KvTransferChunk>> writer =
        decode_stub_->TransferKv(&context, &ack);
    for (const v1::KvTransferChunk& chunk : chunks) {
      if (!writer->Write(chunk)) break;  // the server ended the call
    }
    writer->WritesDone();
    return writer->Finish();
  }

  // Reserves on the decode server, sends the chunks `make` builds for the
  // reservation, and expects the reservation's Generate to fail too (its
  // K/V never completes) with its blocks freed.
  grpc::Status BadTransfer(const std::function<std::vector<v1::KvTransferChunk>(
                               const v1::KvReservation&)>& make) {
    std::unique_ptr<Reservation> r = Reserve(2 * block_size_ + 3);
    if (r == nullptr)
      return grpc::Status(grpc::StatusCode::UNKNOWN, "no reservation");
    const grpc::Status status = TransferKv(make(r->reservation));
    const grpc::Status generate = r->Finish();
    std::printf("[bad-input]   the reservation's Generate -> %s -> %s\n",
                CodeName(generate.error_code()).c_str(),
                generate.error_message().substr(0, 200).c_str());
    EXPECT_FALSE(generate.ok()) << "the reservation was decoded";
    EXPECT_TRUE(cluster_->WaitForIdleKv()) << "K/V blocks leaked";
    return status;
  }

  // A chunk of `num_blocks` zeroed blocks of `r` for `layer`.
  static v1::KvTransferChunk Chunk(const v1::KvReservation& r, int layer,
                                   int first_block, int num_blocks) {
    v1::KvTransferChunk chunk;
    chunk.set_reservation_id(r.reservation_id());
    chunk.set_layer(layer);
    chunk.set_first_block(first_block);
    chunk.set_num_blocks(num_blocks);
    chunk.mutable_data()->assign(
        static_cast<size_t>(std::max(num_blocks, 0) * r.block_bytes()), '\0');
    return chunk;
  }

  grpc::Status RunMoe(const v1::RunMoeRequest& request,
                      v1::RouterService::Stub* stub = nullptr) {
    grpc::ClientContext context;
    SetDeadline(context);
    v1::RunMoeResponse response;
    return (stub != nullptr ? stub : router_.get())
        ->RunMoe(&context, request, &response);
  }
  v1::RunMoeRequest MoeRequest(int layer, v1::Tensor hidden) {
    v1::RunMoeRequest r;
    r.set_layer(layer);
    *r.mutable_hidden() = std::move(hidden);
    return r;
  }

  grpc::Status RunExperts(const v1::RunExpertsRequest& request) {
    grpc::ClientContext context;
    SetDeadline(context);
    v1::RunExpertsResponse response;
    return expert_->RunExperts(&context, request, &response);
  }
  v1::RunExpertsRequest ExpertRequest(int layer, int expert,
                                      v1::Tensor hidden) {
    v1::RunExpertsRequest r;
    v1::ExpertGroup* g = r.add_groups();
    g->set_layer(layer);
    g->set_expert(expert);
    *g->mutable_hidden() = std::move(hidden);
    return r;
  }

  std::string Bin(const std::string& name) {
    return std::string(MOE_BIN_DIR) + "/" + name;
  }

  std::string model_dir_;
  ModelConfig config_;
  std::unique_ptr<LaunchedCluster> cluster_;
  std::map<std::string, pid_t> pids_;
  std::vector<std::string> experts_;
  std::string prefill_, decode_;
  std::unique_ptr<v1::RouterService::Stub> router_;
  std::unique_ptr<v1::ExpertService::Stub> expert_;
  std::unique_ptr<v1::AttentionService::Stub> prefill_stub_, decode_stub_;
  int block_size_ = 0;
  int cases_run_ = 0;
  int request_ids_ = 0;
};

TEST_F(BadInputTest,
       EveryBadInputGetsTheRightStatusNamingTheFieldAndTheClusterServesNext) {
  const int vocab = config_.vocab_size;
  const int context = config_.max_position_embeddings;
  const int hidden = config_.hidden_size;
  const int layers = config_.num_layers;

  // --- The public API, through the gateway. ---
  auto generate = [this](std::function<void(v1::GenerateRequest&)> mutate) {
    return [this, mutate] {
      v1::GenerateRequest request = GreedyRequest({1, 5, 9}, 4);
      mutate(request);
      const StreamResult r = RunGenerate(cluster_->gateway(), request, 60);
      EXPECT_TRUE(r.tokens.empty()) << "tokens streamed for a bad request";
      return r.status;
    };
  };
  const std::string gen = "Inference.Generate";
  const grpc::StatusCode kInvalid = grpc::StatusCode::INVALID_ARGUMENT;
  std::vector<RpcCase> public_cases = {
      {gen, "token id -1", generate([](auto& r) { r.set_prompt_ids(1, -1); }),
       kInvalid, "prompt_ids[1]"},
      {gen, "token id == vocab_size",
       generate([vocab](auto& r) { r.set_prompt_ids(0, vocab); }), kInvalid,
       "prompt_ids[0]"},
      {gen, "NaN temperature", generate([](auto& r) {
         r.mutable_sampling()->set_temperature(std::nanf(""));
       }),
       kInvalid, "sampling.temperature"},
      {gen, "+Inf temperature", generate([](auto& r) {
         r.mutable_sampling()->set_temperature(INFINITY);
       }),
       kInvalid, "sampling.temperature"},
      {gen, "negative temperature",
       generate([](auto& r) { r.mutable_sampling()->set_temperature(-1.0f); }),
       kInvalid, "sampling.temperature"},
      {gen, "top_p 0",
       generate([](auto& r) { r.mutable_sampling()->set_top_p(0); }), kInvalid,
       "sampling.top_p"},
      {gen, "top_p 1.5",
       generate([](auto& r) { r.mutable_sampling()->set_top_p(1.5f); }),
       kInvalid, "sampling.top_p"},
      {gen, "top_p NaN", generate([](auto& r) {
         r.mutable_sampling()->set_top_p(std::nanf(""));
       }),
       kInvalid, "sampling.top_p"},
      {gen, "negative top_k",
       generate([](auto& r) { r.mutable_sampling()->set_top_k(-3); }), kInvalid,
       "sampling.top_k"},
      {gen, "max_tokens 0", generate([](auto& r) { r.set_max_tokens(0); }),
       kInvalid, "max_tokens"},
      {gen, "max_tokens INT32_MAX",
       generate([](auto& r) { r.set_max_tokens(2147483647); }), kInvalid,
       "max_tokens"},
      {gen, "prompt longer than the context", generate([context](auto& r) {
         r.clear_prompt_ids();
         for (int i = 0; i < context + 1; ++i) r.add_prompt_ids(3 + i % 100);
         r.set_max_tokens(1);
       }),
       kInvalid, "prompt_ids"},
      {gen, "empty prompt", generate([](auto& r) { r.clear_prompt_ids(); }),
       kInvalid, "prompt_ids"},
      {gen, "stop token id -5",
       generate([](auto& r) { r.add_stop_token_ids(-5); }), kInvalid,
       "stop_token_ids"},
      {gen, "request_id with a newline",
       generate([](auto& r) { r.set_request_id("a\nb"); }), kInvalid,
       "request_id"},
  };
  RunRpcCases(public_cases);

  // --- Router: RunMoe and MoeStream on the router's address. ---
  const std::string moe = "RouterService.RunMoe";
  std::vector<RpcCase> router_cases = {
      {moe, "unknown layer 99",
       [&] { return RunMoe(MoeRequest(99, F32Tensor(2, hidden))); }, kInvalid,
       "layer"},
      {moe, "layer -1",
       [&] { return RunMoe(MoeRequest(-1, F32Tensor(2, hidden))); }, kInvalid,
       "layer"},
      {moe, "hidden [2, hidden_size - 1]",
       [&] { return RunMoe(MoeRequest(0, F32Tensor(2, hidden - 1))); },
       kInvalid, "hidden"},
      {moe, "hidden of rank 1",
       [&] {
         v1::Tensor t = F32Tensor(2, hidden);
         t.clear_shape();
         t.add_shape(2 * hidden);
         return RunMoe(MoeRequest(0, t));
       },
       kInvalid, "hidden"},
      {moe, "hidden dtype F16",
       [&] {
         v1::Tensor t = F32Tensor(2, hidden);
         t.set_dtype(v1::DTYPE_F16);
         return RunMoe(MoeRequest(0, t));
       },
       kInvalid, "hidden: dtype"},
      {moe, "hidden BF16 with the bytes of F32",
       [&] {
         v1::Tensor t = F32Tensor(2, hidden);
         t.set_dtype(v1::DTYPE_BF16);
         return RunMoe(MoeRequest(0, t));
       },
       kInvalid, "of BF16 needs"},
      {moe, "hidden bytes one short of the shape",
       [&] {
         v1::Tensor t = F32Tensor(2, hidden);
         t.mutable_data()->pop_back();
         return RunMoe(MoeRequest(0, t));
       },
       kInvalid, "hidden"},
      {moe, "hidden shape [2^40, hidden_size], 2 rows of data",
       [&] {
         v1::Tensor t = F32Tensor(2, hidden);
         t.set_shape(0, int64_t{1} << 40);
         return RunMoe(MoeRequest(0, t));
       },
       kInvalid, "hidden"},
      {moe, "NaN in hidden row 1",
       [&] {
         v1::Tensor t = F32Tensor(3, hidden);
         reinterpret_cast<float*>(t.mutable_data()->data())[hidden + 5] =
             std::nanf("");
         return RunMoe(MoeRequest(0, t));
       },
       kInvalid, "hidden"},
      {moe, "+Inf in hidden row 0",
       [&] {
         v1::Tensor t = F32Tensor(3, hidden);
         reinterpret_cast<float*>(t.mutable_data()->data())[0] = INFINITY;
         return RunMoe(MoeRequest(0, t));
       },
       kInvalid, "hidden"},
      {"RouterService.MoeStream",
       "unknown layer, then a valid call on the stream",
       [&] {
         grpc::ClientContext context;
         SetDeadline(context);
         auto stream = router_->MoeStream(&context);
         v1::RunMoeRequest bad = MoeRequest(layers + 5, F32Tensor(2, hidden));
         bad.set_call_id(1);
         v1::RunMoeResponse answer;
         EXPECT_TRUE(stream->Write(bad) && stream->Read(&answer));
         const grpc::Status in_stream(
             static_cast<grpc::StatusCode>(answer.error_code()),
             answer.error_message());
         EXPECT_EQ(answer.call_id(), 1u);
         // The stream goes on: a valid call on it is answered.
         v1::RunMoeRequest good = MoeRequest(0, F32Tensor(2, hidden));
         good.set_call_id(2);
         v1::RunMoeResponse next;
         EXPECT_TRUE(stream->Write(good) && stream->Read(&next));
         EXPECT_EQ(next.call_id(), 2u);
         EXPECT_EQ(next.error_code(), 0) << next.error_message();
         EXPECT_EQ(next.output().shape_size(), 2);
         stream->WritesDone();
         EXPECT_TRUE(stream->Finish().ok());
         return in_stream;
       },
       kInvalid, "layer"},
  };
  RunRpcCases(router_cases);

  // --- Expert server: RunExperts and ExpertStream on the first one. ---
  std::vector<std::pair<int, int>> hosted;
  {
    grpc::ClientContext context;
    SetDeadline(context);
    v1::Placement placement;
    ASSERT_TRUE(
        expert_->GetPlacement(&context, v1::GetPlacementRequest(), &placement)
            .ok());
    for (const v1::ExpertId& id : placement.experts()) {
      hosted.emplace_back(id.layer(), id.expert());
    }
  }
  ASSERT_FALSE(hosted.empty());
  const int host_layer = hosted[0].first;
  const int host_expert = hosted[0].second;
  int foreign_expert = -1;  // an expert of host_layer placed elsewhere
  for (int e = 0; e < config_.num_experts; ++e) {
    if (std::find(hosted.begin(), hosted.end(),
                  std::make_pair(host_layer, e)) == hosted.end()) {
      foreign_expert = e;
      break;
    }
  }
  ASSERT_GE(foreign_expert, 0) << "the first expert server hosts every expert";
  const std::string experts = "ExpertService.RunExperts";
  std::vector<RpcCase> expert_cases = {
      {experts, "unknown layer 99",
       [&] {
         return RunExperts(
             ExpertRequest(99, host_expert, F32Tensor(2, hidden)));
       },
       kInvalid, "groups[0].layer"},
      {experts, "expert id past the model's experts",
       [&] {
         return RunExperts(ExpertRequest(host_layer, config_.num_experts + 3,
                                         F32Tensor(2, hidden)));
       },
       kInvalid, "groups[0].expert"},
      {experts, "expert not hosted on this server",
       [&] {
         return RunExperts(
             ExpertRequest(host_layer, foreign_expert, F32Tensor(2, hidden)));
       },
       grpc::StatusCode::FAILED_PRECONDITION, "groups[0].expert"},
      {experts, "hidden [2, hidden_size + 1]",
       [&] {
         return RunExperts(
             ExpertRequest(host_layer, host_expert, F32Tensor(2, hidden + 1)));
       },
       kInvalid, "groups[0].hidden"},
      {experts, "hidden dtype F16",
       [&] {
         v1::Tensor t = F32Tensor(2, hidden);
         t.set_dtype(v1::DTYPE_F16);
         return RunExperts(ExpertRequest(host_layer, host_expert, t));
       },
       kInvalid, "groups[0].hidden: dtype"},
      {experts, "second group's bytes longer than its shape",
       [&] {
         v1::RunExpertsRequest r =
             ExpertRequest(host_layer, host_expert, F32Tensor(2, hidden));
         v1::ExpertGroup* g = r.add_groups();
         *g = r.groups(0);
         g->mutable_hidden()->mutable_data()->append(8, '\0');
         return RunExperts(r);
       },
       kInvalid, "groups[1].hidden"},
      {"ExpertService.ExpertStream",
       "unhosted expert, then a valid call on the stream",
       [&] {
         grpc::ClientContext context;
         SetDeadline(context);
         auto stream = expert_->ExpertStream(&context);
         v1::RunExpertsRequest bad =
             ExpertRequest(host_layer, foreign_expert, F32Tensor(2, hidden));
         bad.set_call_id(11);
         v1::RunExpertsResponse answer;
         EXPECT_TRUE(stream->Write(bad) && stream->Read(&answer));
         const grpc::Status in_stream(
             static_cast<grpc::StatusCode>(answer.error_code()),
             answer.error_message());
         EXPECT_EQ(answer.call_id(), 11u);
         v1::RunExpertsRequest good =
             ExpertRequest(host_layer, host_expert, F32Tensor(2, hidden));
         good.set_call_id(12);
         v1::RunExpertsResponse next;
         EXPECT_TRUE(stream->Write(good) && stream->Read(&next));
         EXPECT_EQ(next.call_id(), 12u);
         EXPECT_EQ(next.error_code(), 0) << next.error_message();
         EXPECT_EQ(next.outputs_size(), 1);
         stream->WritesDone();
         EXPECT_TRUE(stream->Finish().ok());
         return in_stream;
       },
       grpc::StatusCode::FAILED_PRECONDITION, "groups[0].expert"},
  };
  RunRpcCases(expert_cases);

  // --- Attention servers: Generate, Prefill and TransferKv. ---
  const int64_t block_bytes = int64_t{2} * block_size_ * config_.num_kv_heads *
                              config_.head_dim *
                              static_cast<int64_t>(sizeof(float));
  auto prefill = [&](const v1::PrefillRequest& request) {
    grpc::ClientContext context;
    SetDeadline(context);
    v1::PrefillResult result;
    return prefill_stub_->Prefill(&context, request, &result);
  };
  // A prefill of `tokens` prompt tokens towards the decode server with a
  // reservation that fits it (but that the decode server never made).
  auto prefill_request = [&](int tokens) {
    v1::PrefillRequest r;
    *r.mutable_request() = InternalRequest(tokens, 4);
    r.mutable_destination()->set_address(cluster_->address(decode_));
    v1::KvReservation* reservation =
        r.mutable_destination()->mutable_reservation();
    reservation->set_reservation_id(987654321);
    reservation->set_num_blocks((tokens + block_size_ - 1) / block_size_);
    reservation->set_block_size(block_size_);
    reservation->set_num_layers(layers);
    reservation->set_block_bytes(block_bytes);
    return r;
  };
  auto internal_generate = [&](v1::AttentionService::Stub& stub,
                               const v1::AttentionGenerateRequest& request) {
    grpc::ClientContext context;
    SetDeadline(context);
    auto reader = stub.Generate(&context, request);
    v1::AttentionGenerateResponse m;
    while (reader->Read(&m)) {
    }
    return reader->Finish();
  };
  const std::string attention = "AttentionService";
  std::vector<RpcCase> attention_cases = {
      {attention + ".Generate", "decode server: prompt id past the vocabulary",
       [&] {
         v1::AttentionGenerateRequest r;
         *r.mutable_request() = InternalRequest(5, 4);
         r.mutable_request()->set_prompt_ids(2, vocab + 1);
         r.set_await_transfer(true);
         return internal_generate(*decode_stub_, r);
       },
       kInvalid, "prompt_ids[2]"},
      {attention + ".Generate", "decode server: max_tokens -1",
       [&] {
         v1::AttentionGenerateRequest r;
         *r.mutable_request() = InternalRequest(5, -1);
         r.set_await_transfer(true);
         return internal_generate(*decode_stub_, r);
       },
       kInvalid, "max_tokens"},
      {attention + ".Generate", "prefill server (wrong role)",
       [&] {
         v1::AttentionGenerateRequest r;
         *r.mutable_request() = InternalRequest(5, 4);
         return internal_generate(*prefill_stub_, r);
       },
       grpc::StatusCode::FAILED_PRECONDITION, "role"},
      {attention + ".Prefill", "empty prompt",
       [&] {
         v1::PrefillRequest r = prefill_request(5);
         r.mutable_request()->clear_prompt_ids();
         return prefill(r);
       },
       kInvalid, "prompt_ids"},
      {attention + ".Prefill", "no destination address",
       [&] {
         v1::PrefillRequest r = prefill_request(5);
         r.mutable_destination()->clear_address();
         return prefill(r);
       },
       kInvalid, "destination.address"},
      {attention + ".Prefill",
       "reservation's num_blocks does not cover the prompt",
       [&] {
         v1::PrefillRequest r = prefill_request(2 * block_size_ + 3);
         r.mutable_destination()->mutable_reservation()->set_num_blocks(1);
         return prefill(r);
       },
       kInvalid, "destination.reservation.num_blocks"},
      {attention + ".Prefill", "reservation with another block size",
       [&] {
         v1::PrefillRequest r = prefill_request(5);
         r.mutable_destination()->mutable_reservation()->set_block_size(
             block_size_ + 1);
         return prefill(r);
       },
       grpc::StatusCode::FAILED_PRECONDITION, "destination.reservation"},
      {attention + ".Prefill", "reservation unknown to the decode server",
       [&] { return prefill(prefill_request(2 * block_size_ + 3)); },
       grpc::StatusCode::NOT_FOUND, "reservation 987654321"},
      {attention + ".TransferKv", "unknown reservation",
       [&] {
         v1::KvReservation r;
         r.set_reservation_id(123456789);
         r.set_block_bytes(block_bytes);
         return TransferKv({Chunk(r, 0, 0, 1)});
       },
       grpc::StatusCode::NOT_FOUND, "reservation 123456789"},
      {attention + ".TransferKv", "layer past the model's layers",
       [&] {
         return BadTransfer([&](const v1::KvReservation& r) {
           return std::vector<v1::KvTransferChunk>{Chunk(r, layers, 0, 1)};
         });
       },
       kInvalid, "layer"},
      {attention + ".TransferKv", "data one byte short",
       [&] {
         return BadTransfer([&](const v1::KvReservation& r) {
           v1::KvTransferChunk c = Chunk(r, 0, 0, 2);
           c.mutable_data()->pop_back();
           return std::vector<v1::KvTransferChunk>{c};
         });
       },
       kInvalid, "data"},
      {attention + ".TransferKv", "first_block past the reservation",
       [&] {
         return BadTransfer([&](const v1::KvReservation& r) {
           return std::vector<v1::KvTransferChunk>{
               Chunk(r, 0, r.num_blocks(), 1)};
         });
       },
       kInvalid, "first_block"},
      {attention + ".TransferKv", "negative num_blocks",
       [&] {
         return BadTransfer([&](const v1::KvReservation& r) {
           return std::vector<v1::KvTransferChunk>{Chunk(r, 0, 0, -2)};
         });
       },
       kInvalid, "num_blocks"},
      {attention + ".TransferKv", "second chunk names another reservation",
       [&] {
         return BadTransfer([&](const v1::KvReservation& r) {
           v1::KvTransferChunk second = Chunk(r, 1, 0, 1);
           second.set_reservation_id(r.reservation_id() + 1000);
           return std::vector<v1::KvTransferChunk>{Chunk(r, 0, 0, 1), second};
         });
       },
       kInvalid, "reservation_id"},
      {attention + ".TransferKv", "done with the wrong num_tokens",
       [&] {
         return BadTransfer([&](const v1::KvReservation& r) {
           std::vector<v1::KvTransferChunk> chunks;
           for (int l = 0; l < r.num_layers(); ++l) {
             chunks.push_back(Chunk(r, l, 0, r.num_blocks()));
           }
           v1::KvTransferChunk done;
           done.set_reservation_id(r.reservation_id());
           done.mutable_done()->set_num_tokens(1);
           done.mutable_done()->add_tokens(7);
           chunks.push_back(done);
           return chunks;
         });
       },
       kInvalid, "num_tokens"},
  };
  RunRpcCases(attention_cases);

  // --- A message over kMaxMessageBytes (512 MiB): a RunMoe whose hidden
  // states would be valid but for their size, sent on a channel without
  // the client-side limit. gRPC refuses it before the service sees it. ---
  RunRpcCases({{moe, "message over kMaxMessageBytes",
                [&] {
                  grpc::ChannelArguments args;
                  args.SetMaxSendMessageSize(-1);
                  args.SetMaxReceiveMessageSize(-1);
                  auto stub =
                      v1::RouterService::NewStub(grpc::CreateCustomChannel(
                          cluster_->address("router"),
                          grpc::InsecureChannelCredentials(), args));
                  const int64_t row_bytes = int64_t{hidden} * sizeof(float);
                  const int64_t rows = kMaxMessageBytes / row_bytes + 1;
                  v1::RunMoeRequest r;
                  r.set_layer(0);
                  r.mutable_hidden()->set_dtype(v1::DTYPE_F32);
                  r.mutable_hidden()->add_shape(rows);
                  r.mutable_hidden()->add_shape(hidden);
                  r.mutable_hidden()->mutable_data()->resize(rows * row_bytes);
                  return RunMoe(r, stub.get());
                },
                grpc::StatusCode::RESOURCE_EXHAUSTED, "larger than max"}});

  // --- Malformed files and bad flags: the real binaries, exit non-zero
  // naming the file, field or flag. Servers that wait for their peers
  // before loading the model (router, attention server) get this cluster's
  // servers as peers. ---
  testing::TempDir dir;
  auto write = [&](const std::string& name, const std::string& text) {
    testing::WriteFileOrDie(dir.Join(name), text);
    return dir.Join(name);
  };
  // A copy of the fixture with `file` replaced by `edit` of its text.
  auto broken_model = [&](const std::string& name, const std::string& file,
                          const std::function<std::string(std::string)>& edit) {
    const std::string out = dir.Join(name);
    std::filesystem::create_directories(out);
    for (const auto& entry : std::filesystem::directory_iterator(model_dir_)) {
      std::filesystem::copy_file(entry.path(),
                                 out + "/" + entry.path().filename().string());
    }
    testing::WriteFileOrDie(out + "/" + file,
                            edit(testing::ReadFileOrDie(out + "/" + file)));
    return out;
  };
  auto replace = [](const std::string& from, const std::string& to) {
    return [from, to](std::string text) {
      const size_t at = text.find(from);
      EXPECT_NE(at, std::string::npos) << from;
      if (at != std::string::npos) text.replace(at, from.size(), to);
      return text;
    };
  };
  const std::string syntax_model =
      broken_model("syntax", "config.json",
                   replace("\"hidden_size\": 64,", "\"hidden_size\": 64,,"));
  const std::string missing_model = broken_model(
      "missing", "config.json", replace("\"hidden_size\": 64,", ""));
  const std::string bad_value_model = broken_model(
      "bad-value", "config.json",
      replace("\"num_experts_per_tok\": 2", "\"num_experts_per_tok\": 0"));
  const std::string short_header_model =
      broken_model("short-header", "model.safetensors",
                   [](std::string s) { return s.substr(0, 1000); });
  const std::string short_data_model =
      broken_model("short-data", "model.safetensors",
                   [](std::string s) { return s.substr(0, s.size() - 100); });
  const std::string experts_arg = absl::StrCat(
      cluster_->address(experts_[0]), ",", cluster_->address(experts_[1]));
  const std::string router_address = cluster_->address("router");
  const std::string cluster_bin = MOE_CLUSTER_BIN;
  auto up = [&](const std::string& topology) {
    return std::vector<std::string>{cluster_bin, "up",      "--topology",
                                    topology,    "--model", model_dir_};
  };
  std::vector<ExitCase> exit_cases = {
      {"topology: JSON syntax error",
       up(write("syntax.json", "{\"expert_servers\": 2,")), "not valid JSON"},
      {"topology: unknown field",
       up(write("unknown.json",
                R"({"expert_servers": 2, "expert_server": 3})")),
       "expert_server: unknown key"},
      {"topology: expert_servers -1",
       up(write("negative.json", R"({"expert_servers": -1})")),
       "expert_servers"},
      {"topology: attention role \"wizard\"",
       up(write(
           "role.json",
           R"({"expert_servers": 2, "attention_servers": [{"name": "a", "role": "wizard"}]})")),
       "attention_servers[0].role"},
      {"topology: missing file", up(dir.Join("nowhere.json")), "nowhere.json"},
      {"expert_server: config.json syntax error",
       {Bin("expert_server"), "--model", syntax_model, "--experts", "all"},
       "config.json: not valid JSON"},
      {"gateway: config.json without hidden_size",
       {Bin("gateway"), "--model", missing_model, "--attention_servers",
        cluster_->address(decode_)},
       "\"hidden_size\" is missing"},
      {"router: config.json num_experts_per_tok 0",
       {Bin("router"), "--model", bad_value_model, "--expert_servers",
        experts_arg},
       "num_experts_per_tok"},
      {"expert_server: safetensors truncated inside its header",
       {Bin("expert_server"), "--model", short_header_model, "--experts",
        "all"},
       "model.safetensors"},
      {"attention_server: safetensors truncated inside its data",
       {Bin("attention_server"), "--model", short_data_model, "--router",
        router_address},
       "model.safetensors"},
      {"expert_server: unknown flag",
       {Bin("expert_server"), "--model", model_dir_, "--experts", "all",
        "--bogus_flag=1"},
       "bogus_flag"},
      {"router: unknown flag",
       {Bin("router"), "--model", model_dir_, "--expert_servers", experts_arg,
        "--bogus_flag"},
       "bogus_flag"},
      {"attention_server: unknown flag",
       {Bin("attention_server"), "--model", model_dir_, "--router",
        router_address, "--bogus_flag"},
       "bogus_flag"},
      {"gateway: unknown flag",
       {Bin("gateway"), "--model", model_dir_, "--attention_servers",
        cluster_->address(decode_), "--bogus_flag"},
       "bogus_flag"},
      {"moe-cluster: unknown flag",
       {cluster_bin, "up", "--topology", "x.json", "--model", model_dir_,
        "--bogus_flag"},
       "bogus_flag"},
      {"expert_server: --port_file in a missing directory",
       {Bin("expert_server"), "--model", model_dir_, "--experts", "all",
        "--port_file", dir.Join("no/such/dir/port")},
       "--port_file"},
      {"expert_server: --listen port 99999",
       {Bin("expert_server"), "--model", model_dir_, "--experts", "all",
        "--listen", "127.0.0.1:99999"},
       "--listen"},
      {"expert_server: --threads -3",
       {Bin("expert_server"), "--model", model_dir_, "--experts", "all",
        "--threads", "-3"},
       "--threads"},
      {"expert_server: --experts 0:99 (no such expert)",
       {Bin("expert_server"), "--model", model_dir_, "--experts", "0:99"},
       "expert 99"},
      {"router: --threads -2",
       {Bin("router"), "--model", model_dir_, "--expert_servers", experts_arg,
        "--threads", "-2"},
       "--threads"},
      {"router: --capacity_factor nan",
       {Bin("router"), "--model", model_dir_, "--expert_servers", experts_arg,
        "--capacity_factor", "nan"},
       "--capacity_factor"},
      {"attention_server: --max_running -1",
       {Bin("attention_server"), "--model", model_dir_, "--router",
        router_address, "--max_running", "-1"},
       "--max_running"},
      {"attention_server: --kv_block_size 0",
       {Bin("attention_server"), "--model", model_dir_, "--router",
        router_address, "--kv_block_size", "0"},
       "--kv_block_size"},
      {"gateway: --max_in_flight 0",
       {Bin("gateway"), "--model", model_dir_, "--attention_servers",
        cluster_->address(decode_), "--max_in_flight", "0"},
       "--max_in_flight"},
      // Hyphenated spellings are the same flags, on every program.
      {"gateway: --max-in-flight 0 --attention-servers",
       {Bin("gateway"), "--model", model_dir_, "--attention-servers",
        cluster_->address(decode_), "--max-in-flight", "0"},
       "--max_in_flight"},
      {"gateway: --http-port 70000",
       {Bin("gateway"), "--model", model_dir_, "--attention-servers",
        cluster_->address(decode_), "--http-port=70000"},
       "--http_port"},
      {"router: --capacity-factor nan",
       {Bin("router"), "--model", model_dir_, "--expert-servers", experts_arg,
        "--capacity-factor", "nan"},
       "--capacity_factor"},
      {"attention_server: --kv-block-size 0",
       {Bin("attention_server"), "--model", model_dir_, "--router",
        router_address, "--kv-block-size", "0"},
       "--kv_block_size"},
      {"expert_server: --port-file in a missing directory",
       {Bin("expert_server"), "--model", model_dir_, "--experts", "all",
        "--port-file", dir.Join("no/such/dir/port")},
       "--port_file"},
  };
  RunExitCases(exit_cases);

  // --- The end: every server healthy, no K/V leaked, and the cluster
  // serves. ---
  EXPECT_TRUE(cluster_->WaitForIdleKv());
  ExpectClusterHealthy("every case");
  std::printf("[bad-input] %d cases\n", cases_run_);
  EXPECT_GE(cases_run_, 25);
}

}  // namespace
}  // namespace moe
