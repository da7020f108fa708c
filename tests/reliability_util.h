// Helpers for the reliability end-to-end tests (overload, soak): a server
// process's resident memory, a plain HTTP GET of a /metrics page, and a
// Prometheus series' value.
#ifndef MOE_TESTS_RELIABILITY_UTIL_H_
#define MOE_TESTS_RELIABILITY_UTIL_H_

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <optional>
#include <string>

namespace moe::testing {

class LaunchedCluster;

// Under AddressSanitizer (make test), freed memory waits in a quarantine of
// up to 256 MiB per process before reuse, so resident memory grows through
// any long run whether or not anything leaks. Call before starting the
// servers of a test that bounds their resident memory: it turns the
// quarantine off for child processes (ASAN_OPTIONS), so that their RSS
// tracks live memory again (leaks are also caught by LeakSanitizer, and
// use-after-free by every other test). Does nothing in other builds.
void ResidentMemoryMeaningfulUnderAsan();

// VmRSS of `pid` from /proc/<pid>/status, in KiB; -1 if unreadable.
int64_t ResidentKiB(pid_t pid);

// ResidentKiB of every server of `cluster`, by name.
std::map<std::string, int64_t> ResidentKiBByServer(
    const LaunchedCluster& cluster);

// The body of `url` ("http://HOST:PORT/PATH", HTTP/1.0, no redirects);
// nullopt on a connection error or a status other than 200 (a 30 s socket
// timeout, against hangs only).
std::optional<std::string> HttpGet(const std::string& url);

// The value of an unlabelled series, or the sum of a labelled one's series
// whose labels contain `labels`, named `name` in a Prometheus text
// exposition; 0 if absent.
double SeriesValue(const std::string& exposition, const std::string& name,
                   const std::string& labels = "");

// The gateway's accepted streams not yet ended (moe_gateway_requests_running
// + moe_gateway_requests_waiting) from its /metrics URL; -1 if unreadable.
double GatewayInFlight(const std::string& metrics_url);
// Polls GatewayInFlight until it is 0; false after 60 s (against hangs only:
// it returns as soon as the gauges are 0).
bool WaitForGatewayIdle(const std::string& metrics_url);

}  // namespace moe::testing

#endif  // MOE_TESTS_RELIABILITY_UTIL_H_
