#include "core/security/tls_config.h"

#include "absl/strings/str_cat.h"
#include "core/security/pem_file.h"

namespace moe::security {

absl::StatusOr<TlsConfig> LoadTlsConfig(const TlsFiles& files) {
  TlsConfig config;
  if (files.cert_file.empty() != files.key_file.empty()) {
    const bool has_cert = !files.cert_file.empty();
    return absl::InvalidArgumentError(absl::StrCat(
        has_cert ? files.cert_name : files.key_name, " (",
        has_cert ? files.cert_file : files.key_file, ") needs ",
        has_cert ? files.key_name : files.cert_name,
        ": a certificate and its private key go together"));
  }
  if (!files.cert_file.empty()) {
    absl::StatusOr<std::string> cert =
        ReadCertificatesPem(files.cert_name, files.cert_file);
    if (!cert.ok()) return cert.status();
    absl::StatusOr<std::string> key =
        ReadPrivateKeyPem(files.key_name, files.key_file);
    if (!key.ok()) return key.status();
    if (absl::Status match = CheckKeyMatchesCertificate(
            {files.cert_name, files.cert_file, *cert},
            {files.key_name, files.key_file, *key});
        !match.ok()) {
      return match;
    }
    config.cert_chain = *std::move(cert);
    config.private_key = *std::move(key);
  }
  if (!files.ca_file.empty()) {
    absl::StatusOr<std::string> ca =
        ReadCertificatesPem(files.ca_name, files.ca_file);
    if (!ca.ok()) return ca.status();
    config.ca_bundle = *std::move(ca);
  }
  return config;
}

}  // namespace moe::security
