#include "core/metrics/metrics_endpoint.h"

#include <netdb.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <exception>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"

namespace moe::metrics {
namespace {

// The host part of "HOST:PORT" or "[V6]:PORT" (brackets kept, as civetweb
// wants them).
std::string ListenHost(const std::string& listen_address) {
  const size_t colon = listen_address.rfind(':');
  if (colon == std::string::npos) return listen_address;
  return listen_address.substr(0, colon);
}

// One TCP connection to host:port, closed at once; errors are ignored.
void Knock(const std::string& host, int port) {
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &found) != 0) {
    return;
  }
  for (addrinfo* a = found; a != nullptr; a = a->ai_next) {
    const int fd = socket(a->ai_family, a->ai_socktype, a->ai_protocol);
    if (fd < 0) continue;
    const bool connected = connect(fd, a->ai_addr, a->ai_addrlen) == 0;
    close(fd);
    if (connected) break;
  }
  freeaddrinfo(found);
}

// The host to connect to for a listener bound to `host` (brackets of an
// IPv6 literal removed; wildcards reached through loopback).
std::string ConnectHost(std::string host) {
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  if (host.empty() || host == "0.0.0.0") return "127.0.0.1";
  if (host == "::") return "::1";
  return host;
}

}  // namespace

void PromptExposerDeleter::operator()(prometheus::Exposer* exposer) const {
  if (exposer == nullptr) return;
  std::atomic<bool> stopped{false};
  std::thread waker([&] {
    while (!stopped.load()) {
      Knock(host, port);
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  });
  delete exposer;
  stopped.store(true);
  waker.join();
}

absl::StatusOr<MetricsEndpoint> StartMetricsEndpoint(
    const std::string& what, const std::string& listen_address, int port,
    std::shared_ptr<prometheus::Registry> registry) {
  MetricsEndpoint endpoint;
  if (port == -1) return endpoint;
  if (port < 0 || port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, ": --metrics_port must be -1 (off), 0 (any free port) or a port "
              "1..65535, not ",
        port));
  }
  std::string host = ListenHost(listen_address);
  if (host.empty()) host = "0.0.0.0";
  const std::string bind = absl::StrCat(host, ":", port);
  try {
    // One worker thread: scrapes are rare and small.
    endpoint.exposer.reset(new prometheus::Exposer(bind, 1));
  } catch (const std::exception& e) {
    return absl::UnavailableError(
        absl::StrCat(what, ": cannot serve metrics on ", bind, " (", e.what(),
                     "; address in use, or not a valid host)"));
  }
  endpoint.exposer->RegisterCollectable(registry);
  const std::vector<int> ports = endpoint.exposer->GetListeningPorts();
  if (ports.empty()) {
    return absl::UnavailableError(
        absl::StrCat(what, ": metrics listener on ", bind, " has no port"));
  }
  endpoint.port = ports.front();
  endpoint.exposer.get_deleter() = {ConnectHost(host), endpoint.port};
  endpoint.url = absl::StrCat("http://", host, ":", endpoint.port, "/metrics");
  return endpoint;
}

}  // namespace moe::metrics
