#include "core/security/security_flags.h"

#include <utility>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "core/security/process_security.h"

ABSL_FLAG(std::string, tls_cert_file, "",
          "This process's TLS certificate chain (PEM): served on its port and "
          "presented to peers for mutual TLS. Needs --tls_key_file.");
ABSL_FLAG(std::string, tls_key_file, "",
          "The unencrypted PEM private key of --tls_cert_file.");
ABSL_FLAG(std::string, tls_ca_file, "",
          "PEM CA bundle trusted for peers: servers are verified with it, and "
          "internal servers require client certificates signed by it "
          "(mutual TLS). Empty with a certificate: clients use the system "
          "roots and no client certificates are asked for.");

namespace moe::security {

absl::StatusOr<TlsConfig> TlsConfigFromFlags() {
  TlsFiles files;
  files.cert_file = absl::GetFlag(FLAGS_tls_cert_file);
  files.key_file = absl::GetFlag(FLAGS_tls_key_file);
  files.ca_file = absl::GetFlag(FLAGS_tls_ca_file);
  return LoadTlsConfig(files);
}

absl::Status ConfigureServerSecurityFromFlags(ServerExposure exposure) {
  absl::StatusOr<TlsConfig> tls = TlsConfigFromFlags();
  if (!tls.ok()) return tls.status();
  if (tls->has_ca() && !tls->has_identity()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--tls_ca_file (", absl::GetFlag(FLAGS_tls_ca_file),
        ") needs --tls_cert_file and --tls_key_file in a server: its port "
        "serves TLS whenever TLS is on"));
  }
  ProcessSecurity security;
  security.tls = *std::move(tls);
  security.client_certificates =
      exposure == ServerExposure::kInternal && security.tls.has_ca()
          ? ClientCertificates::kRequired
          : ClientCertificates::kNotRequested;
  return SetProcessSecurity(std::move(security));
}

absl::Status ConfigureClientSecurityFromFlags(std::string bearer_token) {
  absl::StatusOr<TlsConfig> tls = TlsConfigFromFlags();
  if (!tls.ok()) return tls.status();
  ProcessSecurity security;
  security.tls = *std::move(tls);
  security.bearer_token = std::move(bearer_token);
  return SetProcessSecurity(std::move(security));
}

}  // namespace moe::security
