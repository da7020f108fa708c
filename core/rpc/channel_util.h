// Client-side helpers shared by the services, the launcher, the CLI and the
// tests: channels with the project's message limits, and waiting for a
// server to report SERVING on grpc.health.v1.
#ifndef MOE_CORE_RPC_CHANNEL_UTIL_H_
#define MOE_CORE_RPC_CHANNEL_UTIL_H_

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/channel.h"

namespace moe {

// A channel to `address` (host:port) with kMaxMessageBytes limits, secured
// as the process-wide configuration says (core/security/process_security.h):
// plaintext by default; TLS (mutual TLS when the process has a certificate)
// when TLS is configured; every call carrying the process's bearer token
// when it has one. Health checks below use the same channels.
std::shared_ptr<grpc::Channel> MakeChannel(const std::string& address);

// Polls grpc.health.v1.Health/Check ("" = the whole server) until it answers
// SERVING. DEADLINE_EXCEEDED naming the address and the last answer (or RPC
// error) when that does not happen within `timeout_seconds`.
absl::Status WaitForServing(const std::string& address, double timeout_seconds);

// One health check: OK when SERVING, UNAVAILABLE with the status or error.
absl::Status CheckServing(const std::string& address, double timeout_seconds);
// The same over an existing stub (for callers that probe repeatedly);
// `address` is for the message.
absl::Status CheckServingOn(grpc::health::v1::Health::Stub& stub,
                            const std::string& address, double timeout_seconds);

}  // namespace moe

#endif  // MOE_CORE_RPC_CHANNEL_UTIL_H_
