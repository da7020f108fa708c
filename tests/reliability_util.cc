#include "tests/reliability_util.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "tests/launched_cluster.h"

namespace moe::testing {

int64_t ResidentKiB(pid_t pid) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/status"));
  std::string line;
  while (std::getline(in, line)) {
    absl::string_view rest = line;
    if (!absl::ConsumePrefix(&rest, "VmRSS:")) continue;
    rest = absl::StripAsciiWhitespace(rest);
    absl::ConsumeSuffix(&rest, "kB");
    int64_t kib = 0;
    if (absl::SimpleAtoi(absl::StripAsciiWhitespace(rest), &kib)) return kib;
  }
  return -1;
}

std::optional<std::string> HttpGet(const std::string& url) {
  absl::string_view rest = url;
  if (!absl::ConsumePrefix(&rest, "http://")) return std::nullopt;
  const size_t slash = rest.find('/');
  const absl::string_view host_port = rest.substr(0, slash);
  const std::string path(slash == absl::string_view::npos ? "/"
                                                          : rest.substr(slash));
  const size_t colon = host_port.rfind(':');
  int port = 0;
  if (colon == absl::string_view::npos ||
      !absl::SimpleAtoi(host_port.substr(colon + 1), &port)) {
    return std::nullopt;
  }
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (inet_pton(AF_INET, std::string(host_port.substr(0, colon)).c_str(),
                &addr.sin_addr) != 1) {
    return std::nullopt;
  }
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return std::nullopt;
  timeval timeout{30, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof(timeout));
  std::string response;
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) {
    const std::string request = absl::StrCat(
        "GET ", path, " HTTP/1.0\r\nHost: ", host_port, "\r\n\r\n");
    if (send(fd, request.data(), request.size(), MSG_NOSIGNAL) ==
        static_cast<ssize_t>(request.size())) {
      char buffer[16384];
      ssize_t n;
      while ((n = recv(fd, buffer, sizeof(buffer), 0)) > 0)
        response.append(buffer, n);
    }
  }
  close(fd);
  const size_t body = response.find("\r\n\r\n");
  if (!absl::StartsWith(response, "HTTP/1.") || body == std::string::npos ||
      response.substr(9, 3) != "200") {
    return std::nullopt;
  }
  return response.substr(body + 4);
}

double SeriesValue(const std::string& exposition, const std::string& name,
                   const std::string& labels) {
  double total = 0;
  for (absl::string_view line : absl::StrSplit(exposition, '\n')) {
    if (!absl::StartsWith(line, name)) continue;
    const absl::string_view rest = line.substr(name.size());
    if (!rest.empty() && rest[0] != ' ' && rest[0] != '{') continue;
    if (!labels.empty() && !absl::StrContains(rest, labels)) continue;
    double v = 0;
    if (absl::SimpleAtod(rest.substr(rest.rfind(' ') + 1), &v)) total += v;
  }
  return total;
}

double GatewayInFlight(const std::string& metrics_url) {
  const std::optional<std::string> text = HttpGet(metrics_url);
  if (!text.has_value()) return -1;
  return SeriesValue(*text, "moe_gateway_requests_running") +
         SeriesValue(*text, "moe_gateway_requests_waiting");
}

bool WaitForGatewayIdle(const std::string& metrics_url) {
  const auto give_up =
      std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (std::chrono::steady_clock::now() < give_up) {
    if (GatewayInFlight(metrics_url) == 0) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return GatewayInFlight(metrics_url) == 0;
}

std::map<std::string, int64_t> ResidentKiBByServer(
    const LaunchedCluster& cluster) {
  std::map<std::string, int64_t> rss;
  for (const std::string& name : cluster.names()) {
    rss[name] = ResidentKiB(cluster.pid(name));
  }
  return rss;
}

void ResidentMemoryMeaningfulUnderAsan() {
#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define MOE_ASAN_BUILD 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__) || defined(MOE_ASAN_BUILD)
  const char* current = std::getenv("ASAN_OPTIONS");
  std::string options = current == nullptr ? "" : current;
  if (!options.empty()) options += ":";
  options += "quarantine_size_mb=0:thread_local_quarantine_size_kb=0";
  setenv("ASAN_OPTIONS", options.c_str(), /*overwrite=*/1);
#endif
}

}  // namespace moe::testing
