// Reading TLS material from PEM files named by flags, with errors that name
// the flag and the file ("--tls_cert_file: /etc/x.pem: no PEM certificate
// found"). OpenSSL parses the text, so that a bad file is reported at start
// up rather than as a failed handshake later.
#ifndef MOE_CORE_SECURITY_PEM_FILE_H_
#define MOE_CORE_SECURITY_PEM_FILE_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace moe::security {

// The whole file at `path`. NOT_FOUND when it cannot be opened,
// INVALID_ARGUMENT when it is empty; messages start with "FLAG: PATH: ".
absl::StatusOr<std::string> ReadSecretFile(absl::string_view flag,
                                           const std::string& path);

// The PEM text of `path`, which must hold one or more X.509 certificates
// and nothing OpenSSL cannot parse between them. INVALID_ARGUMENT
// ("FLAG: PATH: ...") otherwise.
absl::StatusOr<std::string> ReadCertificatesPem(absl::string_view flag,
                                                const std::string& path);

// The PEM text of `path`, which must hold an unencrypted private key
// (PKCS#8, RSA or EC). INVALID_ARGUMENT ("FLAG: PATH: ...") otherwise.
absl::StatusOr<std::string> ReadPrivateKeyPem(absl::string_view flag,
                                              const std::string& path);

// Where a PEM text came from, for messages.
struct PemSource {
  std::string flag;  // "--tls_cert_file"
  std::string path;
  std::string pem;
};

// OK when `key.pem` is the private key of the first certificate of
// `cert.pem` (both already read by the readers above); INVALID_ARGUMENT
// naming both flags and files otherwise.
absl::Status CheckKeyMatchesCertificate(const PemSource& cert,
                                        const PemSource& key);

}  // namespace moe::security

#endif  // MOE_CORE_SECURITY_PEM_FILE_H_
