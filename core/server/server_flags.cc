// The flags every server process shares (declared in server_process.h).
#include <string>

#include "absl/flags/flag.h"

ABSL_FLAG(std::string, listen, "127.0.0.1:0",
          "host:port to serve on (loopback by default; port 0 picks one).");
ABSL_FLAG(std::string, port_file, "",
          "If set, the bound port is written to this file as soon as it is "
          "bound (health says NOT_SERVING until the server is ready).");
