// attention_server: embeddings, attention, dense/shared FFNs and lm_head with
// a paged KV cache and continuous batching; MoE layers go to the router.
//   attention_server --model DIR --router ADDR [--role both]
#include <cstdio>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "attention_server/attention_server.h"
#include "core/cpu_affinity.h"
#include "core/rpc/tensor_codec.h"
#include "core/server/server_process.h"
#include "tools/common/command_line.h"

ABSL_FLAG(std::string, model, "",
          "Checkpoint directory (only the non-expert weights are loaded).");
ABSL_FLAG(std::string, router, "", "Router address host:port.");
ABSL_FLAG(std::string, moe_dispatch, "router",
          "router: each MoE step goes to the router, which gates, fans out to "
          "the expert servers and combines; direct: this server gates and "
          "sends the groups to the expert servers itself with the router's "
          "placement and capacity policy (one hop each way instead of two).");
ABSL_FLAG(std::string, wire_dtype, "f32",
          "How hidden states and expert outputs travel between this server, "
          "the router and the expert servers: f32 (bit-identical to the "
          "single-process engine) or bf16 (half the bytes; every value is "
          "rounded to bfloat16 once per hop, so outputs differ slightly and "
          "greedy tokens can differ).");
ABSL_FLAG(bool, shared_memory, true,
          "With --moe_dispatch=direct: reach expert servers on this host "
          "over shared memory (/dev/shm and futex wake-ups), falling back "
          "to gRPC where they cannot take it; false: always gRPC.");
ABSL_FLAG(std::string, role, "both",
          "both: run requests end to end; prefill: compute prompts' K/V and "
          "ship it to decode servers; decode: receive K/V and decode.");
ABSL_FLAG(double, kv_lease_seconds, 30.0,
          "Role decode: how long a reservation waits for new K/V (from the "
          "reservation and from each arrival of new blocks), s.");
ABSL_FLAG(int, micro_batches, 1,
          "Micro-batch ping-pong: split each step into this many micro-batches "
          "(1-3) whose attention overlaps the others' MoE steps.");
ABSL_FLAG(bool, prefix_cache, true,
          "Reuse the cached K/V of earlier prompts' leading blocks.");
ABSL_FLAG(std::string, pin_cpus, "",
          "Pin the compute threads to these CPUs, thread k to the k-th: "
          "\"all\" (every CPU this process may use, in order), a list such "
          "as \"0,2-3\", or empty (unpinned). Keeps a server's threads on "
          "distinct CPUs when several servers share a few cores.");
ABSL_FLAG(int, spin_us, moe::ThreadPool::kServerSpinMicroseconds,
          "How long idle compute threads spin before sleeping, us: longer "
          "saves wake-ups when the server has its cores to itself, shorter "
          "leaves them to other servers on the same cores.");
ABSL_FLAG(int, threads, 0, "Compute threads; 0 = one per core.");
ABSL_FLAG(int64_t, kv_cache_mb, 1024, "KV cache memory budget in MiB.");
ABSL_FLAG(int, kv_block_size, 16, "Tokens per KV block.");
ABSL_FLAG(int, prefill_chunk_tokens, 512,
          "Prompt tokens per step across sequences (chunked prefill budget).");
ABSL_FLAG(int, max_running, 256, "Sequences decoding at once.");
ABSL_FLAG(int, max_waiting, 4096,
          "Requests queued for KV space; more are refused (RESOURCE_EXHAUSTED).");
ABSL_FLAG(double, router_timeout, 30.0, "Deadline of each router call, s.");
ABSL_FLAG(double, connect_timeout, 60.0,
          "How long to wait for the router at start, s.");
ABSL_FLAG(double, drain_seconds, 30.0,
          "On SIGTERM/SIGINT, how long running requests may take to finish.");

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Serve attention, dense layers and sampling; MoE layers go to the "
      "router.\n  attention_server --model DIR --router ADDR [--listen ADDR]");
  moe::tools::ParseCommandLineWithHyphens(argc, argv);
  moe::PrepareServerProcess();
  auto fail = [](const std::string& message) {
    std::fprintf(stderr, "attention_server: %s\n", message.c_str());
    return 2;
  };
  if (absl::GetFlag(FLAGS_model).empty()) return fail("--model is required");
  if (absl::GetFlag(FLAGS_router).empty()) return fail("--router is required");
  absl::StatusOr<moe::AttentionRole> role =
      moe::ParseAttentionRole(absl::GetFlag(FLAGS_role));
  if (!role.ok()) return fail("--" + std::string(role.status().message()));
  absl::StatusOr<moe::MoeDispatchMode> moe_dispatch =
      moe::ParseMoeDispatchMode(absl::GetFlag(FLAGS_moe_dispatch));
  if (!moe_dispatch.ok()) {
    return fail("--" + std::string(moe_dispatch.status().message()));
  }
  if (!(absl::GetFlag(FLAGS_kv_lease_seconds) > 0)) {
    return fail("--kv_lease_seconds must be > 0");
  }
  if (absl::GetFlag(FLAGS_threads) < 0) return fail("--threads must be >= 0");
  const int64_t kv_mb = absl::GetFlag(FLAGS_kv_cache_mb);
  if (kv_mb < 1 || kv_mb > (int64_t{1} << 24)) {
    return fail("--kv_cache_mb must be in [1, 16777216]");
  }
  const int block = absl::GetFlag(FLAGS_kv_block_size);
  if (block < 1 || block > 4096) {
    return fail("--kv_block_size must be in [1, 4096]");
  }
  if (absl::GetFlag(FLAGS_prefill_chunk_tokens) < 1) {
    return fail("--prefill_chunk_tokens must be >= 1");
  }
  if (absl::GetFlag(FLAGS_max_running) < 1) {
    return fail("--max_running must be >= 1");
  }
  if (absl::GetFlag(FLAGS_max_waiting) < 0) {
    return fail("--max_waiting must be >= 0");
  }
  if (!(absl::GetFlag(FLAGS_router_timeout) > 0)) {
    return fail("--router_timeout must be > 0");
  }
  if (!(absl::GetFlag(FLAGS_connect_timeout) > 0)) {
    return fail("--connect_timeout must be > 0");
  }
  if (!(absl::GetFlag(FLAGS_drain_seconds) >= 0)) {
    return fail("--drain_seconds must be >= 0");
  }
  moe::AttentionServerOptions options;
  options.router_address = absl::GetFlag(FLAGS_router);
  options.moe_dispatch = *moe_dispatch;
  absl::StatusOr<moe::v1::DType> wire_dtype =
      moe::ParseWireDtype(absl::GetFlag(FLAGS_wire_dtype));
  if (!wire_dtype.ok()) {
    return fail("--wire_dtype: " + std::string(wire_dtype.status().message()));
  }
  options.wire_dtype = *wire_dtype;
  options.shared_memory = absl::GetFlag(FLAGS_shared_memory);
  options.role = *role;
  options.engine.kv_lease_seconds = absl::GetFlag(FLAGS_kv_lease_seconds);
  options.engine.prefix_cache = absl::GetFlag(FLAGS_prefix_cache);
  const int micro_batches = absl::GetFlag(FLAGS_micro_batches);
  if (micro_batches < 1 || micro_batches > 3) {
    return fail("--micro_batches must be 1, 2 or 3");
  }
  options.engine.micro_batches = micro_batches;
  options.router_timeout_seconds = absl::GetFlag(FLAGS_router_timeout);
  options.connect_timeout_seconds = absl::GetFlag(FLAGS_connect_timeout);
  options.engine.model_dir = absl::GetFlag(FLAGS_model);
  options.engine.num_threads = absl::GetFlag(FLAGS_threads);
  if (absl::GetFlag(FLAGS_spin_us) < 0) return fail("--spin_us must be >= 0");
  options.engine.spin_microseconds = absl::GetFlag(FLAGS_spin_us);
  absl::StatusOr<std::vector<int>> pin_cpus =
      moe::ParseCpuList(absl::GetFlag(FLAGS_pin_cpus));
  if (!pin_cpus.ok()) {
    return fail("--pin_cpus: " + std::string(pin_cpus.status().message()));
  }
  options.engine.pin_cpus = *std::move(pin_cpus);
  options.engine.kv_cache_bytes = kv_mb << 20;
  options.engine.kv_block_size = block;
  options.engine.prefill_chunk_tokens = absl::GetFlag(FLAGS_prefill_chunk_tokens);
  options.engine.max_running = absl::GetFlag(FLAGS_max_running);
  options.engine.max_waiting = absl::GetFlag(FLAGS_max_waiting);

  options.registry = std::make_shared<prometheus::Registry>();

  moe::ServerProcess<moe::AttentionServer> process;
  process.what = "attention_server";
  process.drain_seconds = absl::GetFlag(FLAGS_drain_seconds);
  process.registry = options.registry;
  process.start = [&options](const std::string& bound_address) {
    options.listen_address = bound_address;
    return moe::AttentionServer::Start(options);
  };
  process.detail = [&options](moe::AttentionServer& server) {
    const moe::AttentionLoadInfo load = server.engine().Load();
    return absl::StrCat("role ", moe::AttentionRoleName(options.role), ", ",
                        load.kv_blocks_total, " KV blocks of ",
                        load.kv_block_size, " tokens, router ",
                        options.router_address,
                        moe::DescribePinning(options.engine.pin_cpus),
                        options.moe_dispatch == moe::MoeDispatchMode::kDirect
                            ? " (MoE dispatched directly to the expert servers)"
                            : "");
  };
  return moe::RunServerProcess(process);
}
