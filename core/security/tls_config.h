// A process's TLS material: its own certificate chain and key (served on
// its port and, for mutual TLS, presented to its peers) and the CA bundle
// it trusts for its peers. Loaded and checked once at start-up.
#ifndef MOE_CORE_SECURITY_TLS_CONFIG_H_
#define MOE_CORE_SECURITY_TLS_CONFIG_H_

#include <string>

#include "absl/status/statusor.h"

namespace moe::security {

// Paths as given; empty = not given. The names are how messages call them
// (the flags by default; the launcher names its topology keys instead).
struct TlsFiles {
  std::string cert_file;
  std::string key_file;
  std::string ca_file;
  std::string cert_name = "--tls_cert_file";
  std::string key_name = "--tls_key_file";
  std::string ca_name = "--tls_ca_file";
};

// PEM text; empty = not given.
struct TlsConfig {
  std::string cert_chain;
  std::string private_key;
  std::string ca_bundle;

  // This process has a certificate (serves TLS, can present it to peers).
  bool has_identity() const { return !cert_chain.empty(); }
  // This process verifies its peers against its own CA bundle.
  bool has_ca() const { return !ca_bundle.empty(); }
  // Any TLS at all: channels use TLS when this is true.
  bool enabled() const { return has_identity() || has_ca(); }
};

// Reads and checks `files`: the certificate and key go together (one
// without the other is INVALID_ARGUMENT naming both), each file must be
// readable, non-empty PEM of the right kind, and the key must belong to the
// certificate. Nothing given = TLS off (an empty TlsConfig).
absl::StatusOr<TlsConfig> LoadTlsConfig(const TlsFiles& files);

}  // namespace moe::security

#endif  // MOE_CORE_SECURITY_TLS_CONFIG_H_
