// The flags every server process shares (declared in server_process.h).
#include <filesystem>
#include <string>
#include <system_error>

#include "absl/flags/flag.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "core/server/server_process.h"

ABSL_FLAG(std::string, listen, "127.0.0.1:0",
          "host:port to serve on (loopback by default; port 0 picks one).");
ABSL_FLAG(std::string, port_file, "",
          "If set, the bound port is written to this file as soon as it is "
          "bound (health says NOT_SERVING until the server is ready).");

namespace moe {

absl::Status ValidateServerFlags() {
  const std::string listen = absl::GetFlag(FLAGS_listen);
  const size_t colon = listen.rfind(':');
  int port = -1;
  if (colon == std::string::npos || colon == 0 ||
      !absl::SimpleAtoi(listen.substr(colon + 1), &port) || port < 0 ||
      port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--listen: expected HOST:PORT with PORT in [0, 65535], got \"", listen,
        "\""));
  }
  const std::string port_file = absl::GetFlag(FLAGS_port_file);
  if (!port_file.empty()) {
    // Checked before anything starts: a launcher waiting for the file
    // would otherwise wait for nothing.
    const std::filesystem::path dir =
        std::filesystem::path(port_file).parent_path();
    std::error_code error;
    if (!dir.empty() && !std::filesystem::is_directory(dir, error)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--port_file: ", port_file, ": the directory ",
                       dir.string(), " does not exist"));
    }
  }
  return absl::OkStatus();
}

}  // namespace moe
