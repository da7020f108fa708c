// moe-cluster: starts a whole cluster on loopback from one topology file.
//   moe-cluster up --topology deploy/local/demo.json --model DIR
// Exit codes: 0 after a requested stop, 1 when a server fails to start,
// 2 for bad input (flags, topology, model directory, missing binaries).
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "core/model_config.h"
#include "core/security/bearer_token.h"
#include "core/security/process_security.h"
#include "core/security/tls_config.h"
#include "tools/common/command_line.h"
#include "tools/moe_cluster/cluster_launcher.h"
#include "tools/moe_cluster/process_supervisor.h"
#include "tools/moe_cluster/server_args.h"
#include "tools/moe_cluster/topology.h"

ABSL_FLAG(std::string, topology, "",
          "Topology JSON file (deploy/local/*.json).");
ABSL_FLAG(std::string, model, "",
          "Checkpoint directory (config.json + weights).");
ABSL_FLAG(std::string, bin_dir, "",
          "Directory of the server binaries; default: moe-cluster's own.");
ABSL_FLAG(std::string, log_dir, "",
          "Where <server>.log and <server>.port go; default: a fresh "
          "directory under $TMPDIR or /tmp.");
ABSL_FLAG(double, startup_timeout, 120,
          "Seconds the whole start-up may take before it is abandoned.");
ABSL_FLAG(double, grace_seconds, 40,
          "On stop, seconds each group of servers may take to drain before "
          "SIGKILL.");
ABSL_FLAG(std::string, gateway_listen, "127.0.0.1:0",
          "host:port of the gateway (port 0 picks a free one).");
ABSL_FLAG(int, gateway_http_port, 0,
          "Port of the gateway's OpenAI-compatible HTTP API, on the host of "
          "--gateway_listen: 0 picks a free one, -1 turns it off.");
ABSL_FLAG(std::string, prometheus_targets_dir, "",
          "If set, Prometheus file_sd target files (gateway.json, "
          "attention.json, router.json, expert.json) for every server's "
          "/metrics are written here once the cluster is ready; see "
          "deploy/prometheus/prometheus.yml.");

namespace {

namespace fs = std::filesystem;

constexpr char kUsage[] =
    "Start a local cluster from a topology file (deploy/local/README.md).\n"
    "  moe-cluster up --topology FILE --model DIR [--bin_dir DIR] "
    "[--log_dir DIR]\n"
    "      [--startup_timeout SECONDS] [--grace_seconds SECONDS] "
    "[--gateway_listen 127.0.0.1:0]\n"
    "      [--gateway_http_port 0]";

[[noreturn]] void UsageError(const std::string& message) {
  std::fprintf(stderr, "moe-cluster: %s\n", message.c_str());
  std::exit(2);
}

std::string OwnDirectory() {
  std::error_code ec;
  const fs::path self = fs::read_symlink("/proc/self/exe", ec);
  return ec ? std::string(".") : self.parent_path().string();
}

bool IsExecutableFile(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) &&
         access(path.c_str(), X_OK) == 0;
}

std::string MakeLogDir(const std::string& requested) {
  if (!requested.empty()) {
    std::error_code ec;
    fs::create_directories(requested, ec);
    if (ec || !fs::is_directory(requested)) {
      UsageError(absl::StrCat("--log_dir: cannot create ", requested));
    }
    const fs::path absolute = fs::absolute(requested, ec);
    return ec ? requested : absolute.string();
  }
  const char* tmp = std::getenv("TMPDIR");
  std::string pattern = absl::StrCat(tmp != nullptr && *tmp ? tmp : "/tmp",
                                     "/moe-cluster-XXXXXX");
  if (mkdtemp(pattern.data()) == nullptr) {
    UsageError(absl::StrCat("cannot create a log directory like ", pattern));
  }
  return pattern;
}

}  // namespace

namespace {

// Checks the files of the topology's "security" section before any server
// starts (so that a bad file is one clear error, not N server failures), and
// makes the launcher's own health checks use TLS with the servers'
// certificate as its client certificate.
absl::Status ConfigureLauncherSecurity(
    const moe::cluster::SecurityTopology& security) {
  if (!security.auth_token_file.empty()) {
    absl::StatusOr<std::string> token = moe::security::LoadBearerToken(
        "security.auth_token_file", security.auth_token_file);
    if (!token.ok()) return token.status();
  }
  moe::security::TlsFiles files;
  files.cert_file = security.tls_cert_file;
  files.key_file = security.tls_key_file;
  files.ca_file = security.tls_ca_file;
  files.cert_name = "security.tls_cert_file";
  files.key_name = "security.tls_key_file";
  files.ca_name = "security.tls_ca_file";
  absl::StatusOr<moe::security::TlsConfig> tls =
      moe::security::LoadTlsConfig(files);
  if (!tls.ok()) return tls.status();
  moe::security::ProcessSecurity process;
  process.tls = *std::move(tls);
  return moe::security::SetProcessSecurity(std::move(process));
}

}  // namespace

int main(int argc, char** argv) {
  moe::cluster::SignalWaiter::BlockSignals();  // before any thread exists
  absl::StatusOr<std::vector<std::string>> positional =
      moe::tools::ParseToolCommandLine(argc, argv, kUsage, "tools/moe_cluster/");
  if (!positional.ok()) UsageError(std::string(positional.status().message()));

  if (positional->empty()) {
    UsageError(absl::StrCat("missing command (\"up\")\n", kUsage));
  }
  if ((*positional)[0] != "up") {
    UsageError(absl::StrCat("unknown command \"", (*positional)[0],
                            "\" (expected \"up\")"));
  }
  if (positional->size() > 1) {
    UsageError(absl::StrCat("unexpected argument \"", (*positional)[1], "\""));
  }
  const std::string topology_path = absl::GetFlag(FLAGS_topology);
  if (topology_path.empty()) UsageError("--topology is required");
  std::string model_dir = absl::GetFlag(FLAGS_model);
  if (model_dir.empty()) UsageError("--model is required");
  const double startup_timeout = absl::GetFlag(FLAGS_startup_timeout);
  if (!(startup_timeout > 0)) UsageError("--startup_timeout must be > 0");
  const double grace = absl::GetFlag(FLAGS_grace_seconds);
  if (!(grace >= 0)) UsageError("--grace_seconds must be >= 0");
  const std::string gateway_listen = absl::GetFlag(FLAGS_gateway_listen);
  const size_t colon = gateway_listen.rfind(':');
  int listen_port = -1;
  if (colon == std::string::npos ||
      !absl::SimpleAtoi(gateway_listen.substr(colon + 1), &listen_port) ||
      listen_port < 0 || listen_port > 65535) {
    UsageError(absl::StrCat("--gateway_listen: \"", gateway_listen,
                            "\" is not host:port with a port in [0, 65535]"));
  }

  absl::StatusOr<moe::cluster::Topology> topology =
      moe::cluster::LoadTopology(topology_path);
  if (!topology.ok()) UsageError(std::string(topology.status().message()));
  std::error_code ec;
  if (!fs::is_regular_file(fs::path(model_dir) / "config.json", ec)) {
    UsageError(absl::StrCat("--model: no config.json in ", model_dir,
                            " (expected ", model_dir, "/config.json)"));
  }
  absl::StatusOr<moe::ModelConfig> config = moe::LoadModelConfig(model_dir);
  if (!config.ok()) {
    UsageError(
        absl::StrCat("--model ", model_dir, ": ", config.status().message()));
  }
  absl::StatusOr<moe::cluster::ClusterPlan> plan =
      moe::cluster::ResolveTopology(*topology, *config);
  if (!plan.ok()) UsageError(std::string(plan.status().message()));
  if (absl::Status s = ConfigureLauncherSecurity(plan->security); !s.ok()) {
    UsageError(absl::StrCat("topology ", topology_path, ": ", s.message()));
  }

  moe::cluster::LauncherOptions options;
  options.bin_dir = absl::GetFlag(FLAGS_bin_dir);
  if (options.bin_dir.empty()) options.bin_dir = OwnDirectory();
  for (const std::string& binary : moe::cluster::RequiredBinaries()) {
    const std::string path = absl::StrCat(options.bin_dir, "/", binary);
    if (!IsExecutableFile(path)) {
      UsageError(absl::StrCat("--bin_dir: no executable ", binary, " in ",
                              options.bin_dir, " (expected ", path, ")"));
    }
  }
  options.log_dir = MakeLogDir(absl::GetFlag(FLAGS_log_dir));
  options.startup_timeout_seconds = startup_timeout;
  options.grace_seconds = grace;
  options.gateway_listen = gateway_listen;
  options.gateway_http_port = absl::GetFlag(FLAGS_gateway_http_port);
  if (options.gateway_http_port < -1 || options.gateway_http_port > 65535) {
    UsageError(absl::StrCat("--gateway_http_port: ", options.gateway_http_port,
                            " is not -1 (off) or a port in [0, 65535]"));
  }
  options.gateway_http_tls = plan->security.tls();
  options.prometheus_targets_dir = absl::GetFlag(FLAGS_prometheus_targets_dir);
  if (fs::path absolute = fs::absolute(model_dir, ec); !ec) {
    model_dir = absolute.string();
  }

  std::printf("moe-cluster: topology %s (%s), model %s, logs in %s\n",
              plan->name.c_str(), topology_path.c_str(), model_dir.c_str(),
              options.log_dir.c_str());
  std::fflush(stdout);
  return moe::cluster::RunCluster(moe::cluster::PlanLaunches(*plan, model_dir),
                                  options);
}
