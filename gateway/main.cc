// gateway: the public moe.v1.Inference API in front of the attention servers.
//   gateway --model DIR --attention_servers ADDR,ADDR [--listen ADDR]
#include <cstdio>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "core/rpc/server_util.h"
#include "core/security/bearer_token.h"
#include "core/security/process_security.h"
#include "core/status_macros.h"
#include "core/server/server_process.h"
#include "gateway/gateway_server.h"
#include "tools/common/command_line.h"

ABSL_FLAG(std::string, model, "",
          "Checkpoint directory: config.json (validation) and the tokenizer "
          "files, when present (text prompts and streamed text).");
ABSL_FLAG(std::string, attention_servers, "",
          "Comma-separated addresses of attention servers of role both.");
ABSL_FLAG(std::string, prefill_servers, "",
          "Comma-separated prefill server addresses (with --decode_servers, "
          "instead of --attention_servers).");
ABSL_FLAG(std::string, decode_servers, "",
          "Comma-separated decode server addresses.");
ABSL_FLAG(int, prefix_overload_margin, 4,
          "A server holding a prompt's prefix is passed over when it has more "
          "than this many requests in flight beyond the least-loaded one.");
ABSL_FLAG(int, max_in_flight, 1024,
          "Generate calls at once; more get RESOURCE_EXHAUSTED.");
ABSL_FLAG(double, connect_timeout, 60.0,
          "How long to wait for the attention servers at start, s.");
ABSL_FLAG(std::string, auth_token_file, "",
          "File holding the bearer token the public API requires "
          "(\"authorization: Bearer <token>\" on Generate, Abort and "
          "GetModelInfo; a trailing newline is ignored). Empty: no token. "
          "grpc.health.v1 stays open.");
ABSL_FLAG(int, http_port, -1,
          "Port of the OpenAI-compatible HTTP API (/v1/completions, "
          "/v1/chat/completions, /v1/models, /health) on the host of "
          "--listen: 0 picks a free one, -1 (the default) turns it off. "
          "Same bearer token and TLS as the gRPC port.");
ABSL_FLAG(std::string, http_port_file, "",
          "If set, the bound HTTP port is written to this file (before the "
          "gRPC --port_file, so a launcher that saw the gRPC port can read "
          "it).");
ABSL_FLAG(int, http_max_body_bytes, 8 << 20,
          "Largest HTTP request body accepted; larger ones get 413.");
ABSL_FLAG(double, drain_seconds, 30.0,
          "On SIGTERM/SIGINT, how long running streams may take to finish.");

namespace {

// The host part of "HOST:PORT" or "[V6]:PORT", brackets removed: where the
// HTTP API listens (beside the gRPC port).
std::string ListenHost(const std::string& listen_address) {
  std::string host = listen_address.substr(0, listen_address.rfind(':'));
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  return host;
}

// host:port to connect to (wildcards reached through loopback).
std::string ConnectAddress(std::string host, int port) {
  if (host.empty() || host == "0.0.0.0") host = "127.0.0.1";
  if (host == "::") host = "::1";
  if (host.find(':') != std::string::npos) host = absl::StrCat("[", host, "]");
  return absl::StrCat(host, ":", port);
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Serve the public Inference API.\n"
      "  gateway --model DIR --attention_servers ADDR,ADDR [--listen ADDR]\n"
      "          [--http_port PORT]");
  moe::tools::ParseCommandLineWithHyphens(argc, argv);
  moe::PrepareServerProcess();
  auto fail = [](const std::string& message) {
    std::fprintf(stderr, "gateway: %s\n", message.c_str());
    return 2;
  };
  moe::GatewayServerOptions options;
  options.model_dir = absl::GetFlag(FLAGS_model);
  if (options.model_dir.empty()) return fail("--model is required");
  options.attention_addresses =
      absl::StrSplit(absl::GetFlag(FLAGS_attention_servers), ',',
                     absl::SkipWhitespace());
  options.prefill_addresses = absl::StrSplit(
      absl::GetFlag(FLAGS_prefill_servers), ',', absl::SkipWhitespace());
  options.decode_addresses = absl::StrSplit(
      absl::GetFlag(FLAGS_decode_servers), ',', absl::SkipWhitespace());
  const bool disaggregated =
      !options.prefill_addresses.empty() || !options.decode_addresses.empty();
  if (options.attention_addresses.empty() == !disaggregated) {
    return fail(
        "give --attention_servers (role both) or --prefill_servers and "
        "--decode_servers");
  }
  if (disaggregated &&
      (options.prefill_addresses.empty() || options.decode_addresses.empty())) {
    return fail("--prefill_servers and --decode_servers go together");
  }
  options.prefix_overload_margin = absl::GetFlag(FLAGS_prefix_overload_margin);
  if (options.prefix_overload_margin < 0) {
    return fail("--prefix_overload_margin must be >= 0");
  }
  options.max_in_flight = absl::GetFlag(FLAGS_max_in_flight);
  if (options.max_in_flight < 1) return fail("--max_in_flight must be >= 1");
  options.connect_timeout_seconds = absl::GetFlag(FLAGS_connect_timeout);
  if (!(options.connect_timeout_seconds > 0)) {
    return fail("--connect_timeout must be > 0");
  }
  if (!(absl::GetFlag(FLAGS_drain_seconds) >= 0)) {
    return fail("--drain_seconds must be >= 0");
  }

  if (const std::string token_file = absl::GetFlag(FLAGS_auth_token_file);
      !token_file.empty()) {
    absl::StatusOr<std::string> token =
        moe::security::LoadBearerToken("--auth_token_file", token_file);
    if (!token.ok()) return fail(std::string(token.status().message()));
    options.bearer_token = *std::move(token);
  }

  if (const int http_port = absl::GetFlag(FLAGS_http_port); http_port != -1) {
    if (http_port < 0 || http_port > 65535) {
      return fail(absl::StrCat("--http_port must be -1 (off) or in [0, 65535], "
                               "got ", http_port));
    }
    const int max_body = absl::GetFlag(FLAGS_http_max_body_bytes);
    if (max_body < 1024) {
      return fail(absl::StrCat("--http_max_body_bytes must be >= 1024, got ",
                               max_body));
    }
    moe::OpenAiHttpOptions http;
    http.port = http_port;
    http.max_body_bytes = static_cast<size_t>(max_body);
    options.http = http;
  } else if (!absl::GetFlag(FLAGS_http_port_file).empty()) {
    return fail("--http_port_file needs --http_port");
  }

  options.registry = std::make_shared<prometheus::Registry>();

  moe::ServerProcess<moe::GatewayServer> process;
  process.what = "gateway";
  process.exposure = moe::security::ServerExposure::kPublic;
  process.drain_seconds = absl::GetFlag(FLAGS_drain_seconds);
  process.registry = options.registry;
  process.start = [&options](const std::string& bound_address)
      -> absl::StatusOr<std::unique_ptr<moe::GatewayServer>> {
    options.listen_address = bound_address;
    if (options.http.has_value()) {
      options.http->host = ListenHost(bound_address);
    }
    absl::StatusOr<std::unique_ptr<moe::GatewayServer>> server =
        moe::GatewayServer::Start(options);
    if (!server.ok() || !options.http.has_value()) return server;
    const int http_port = (*server)->http_port();
    std::printf("gateway: OpenAI API on %s://%s/v1\n",
                moe::security::GetProcessSecurity().tls.has_identity()
                    ? "https"
                    : "http",
                ConnectAddress(options.http->host, http_port).c_str());
    std::fflush(stdout);
    if (const std::string file = absl::GetFlag(FLAGS_http_port_file);
        !file.empty()) {
      RETURN_IF_ERROR(moe::WritePortFile(file, http_port));
    }
    return server;
  };
  process.detail = [&options, disaggregated](moe::GatewayServer&) {
    return disaggregated
               ? absl::StrCat(options.prefill_addresses.size(), " prefill and ",
                              options.decode_addresses.size(), " decode servers")
               : absl::StrCat(options.attention_addresses.size(),
                              " attention servers");
  };
  return moe::RunServerProcess(process);
}
