// fake_server: stands in for a server binary in moe-cluster tests. Installed
// under a server's name (a symlink "attention_server" or "gateway" in a test
// bin dir), it takes that name from argv[0] and:
//   - prints "fake <name>: ARG ARG ..." (its arguments, one line) to stdout,
//     which the launcher sends to the server's log;
//   - checks that the servers it depends on (--router, --attention_servers,
//     --expert_servers) answer SERVING, else exits 4;
//   - serves grpc.health.v1 on --listen, writes --port_file and waits for
//     SIGINT/SIGTERM, then exits 0;
//   - given --http_port_file (the gateway's OpenAI API), writes its gRPC
//     port there after serving, as the real gateway writes its HTTP port
//     after its gRPC server is up (it serves no HTTP itself).
// Environment switches, each naming the binary it applies to:
//   MOE_FAKE_EXIT=<name>          print a message and exit 3 at start
//   MOE_FAKE_HANG=<name>          print "hanging" and never write a port file
//   MOE_FAKE_IGNORE_TERM=<name>   ignore SIGTERM once serving
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_split.h"
#include "core/rpc/channel_util.h"
#include "core/rpc/server_util.h"

namespace {

bool Switch(const char* variable, const std::string& name) {
  const char* value = std::getenv(variable);
  return value != nullptr && name == value;
}

}  // namespace

int main(int argc, char** argv) {
  moe::BlockTerminationSignals();
  std::string name = argv[0];
  name = name.substr(name.rfind('/') + 1);
  std::map<std::string, std::string> flags;
  std::string line = "fake " + name + ":";
  for (int i = 1; i < argc; ++i) {
    line += std::string(" ") + argv[i];
    const std::string arg = argv[i];
    const size_t eq = arg.find('=');
    if (arg.rfind("--", 0) == 0 && eq != std::string::npos) {
      flags[arg.substr(2, eq - 2)] = arg.substr(eq + 1);
    }
  }
  std::printf("%s\n", line.c_str());
  std::fflush(stdout);
  if (Switch("MOE_FAKE_EXIT", name)) {
    std::printf("fake %s: failing on purpose\n", name.c_str());
    return 3;
  }
  if (Switch("MOE_FAKE_HANG", name)) {
    std::printf("fake %s: hanging\n", name.c_str());
    std::fflush(stdout);
    moe::WaitForTerminationSignal();
    return 0;
  }
  for (const char* dependency :
       {"router", "attention_servers", "expert_servers"}) {
    auto it = flags.find(dependency);
    if (it == flags.end()) continue;
    for (const std::string& address :
         std::vector<std::string>(absl::StrSplit(it->second, ','))) {
      // A generous deadline: a slow answer on a busy machine still counts.
      if (absl::Status s = moe::CheckServing(address, 60); !s.ok()) {
        std::printf("fake %s: --%s %s: %s\n", name.c_str(), dependency,
                    address.c_str(), std::string(s.message()).c_str());
        return 4;
      }
    }
  }
  const std::string listen =
      flags.count("listen") ? flags["listen"] : "127.0.0.1:0";
  absl::StatusOr<moe::StartedServer> server =
      moe::StartGrpcServer(name, listen, {});
  if (!server.ok()) {
    std::printf("fake %s: %s\n", name.c_str(),
                std::string(server.status().message()).c_str());
    return 1;
  }
  if (absl::Status s = moe::AnnounceServing("fake " + name, "serving", listen,
                                            server->port, flags["port_file"]);
      !s.ok()) {
    return 1;
  }
  if (flags.count("http_port_file") != 0) {
    if (absl::Status s =
            moe::WritePortFile(flags["http_port_file"], server->port);
        !s.ok()) {
      return 1;
    }
  }
  while (true) {
    const int signal = moe::WaitForTerminationSignal();
    if (signal == SIGTERM && Switch("MOE_FAKE_IGNORE_TERM", name)) {
      std::printf("fake %s: ignoring SIGTERM\n", name.c_str());
      std::fflush(stdout);
      continue;
    }
    break;
  }
  server->server->Shutdown();
  return 0;
}
