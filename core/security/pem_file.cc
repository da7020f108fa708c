#include "core/security/pem_file.h"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <fstream>
#include <memory>
#include <sstream>

#include "absl/strings/str_cat.h"

namespace moe::security {
namespace {

struct BioFree {
  void operator()(BIO* bio) const { BIO_free(bio); }
};
struct X509Free {
  void operator()(X509* cert) const { X509_free(cert); }
};
struct KeyFree {
  void operator()(EVP_PKEY* key) const { EVP_PKEY_free(key); }
};
using BioPtr = std::unique_ptr<BIO, BioFree>;
using X509Ptr = std::unique_ptr<X509, X509Free>;
using KeyPtr = std::unique_ptr<EVP_PKEY, KeyFree>;

BioPtr MemoryBio(const std::string& text) {
  return BioPtr(BIO_new_mem_buf(text.data(), static_cast<int>(text.size())));
}

// OpenSSL's reason for the last failure, and the error queue cleared (it
// is per thread and would otherwise leak into an unrelated later call).
std::string TakeOpenSslError() {
  const unsigned long code = ERR_peek_last_error();
  std::string reason;
  if (code != 0) {
    const char* text = ERR_reason_error_string(code);
    if (text != nullptr) reason = text;
  }
  ERR_clear_error();
  return reason;
}

std::string Prefix(absl::string_view flag, absl::string_view path) {
  return absl::StrCat(flag, ": ", path, ": ");
}

// A key callback that refuses to prompt for a passphrase on the terminal.
int NoPassphrase(char*, int, int, void*) { return -1; }

X509Ptr FirstCertificate(const std::string& pem) {
  BioPtr bio = MemoryBio(pem);
  return X509Ptr(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
}

KeyPtr PrivateKey(const std::string& pem) {
  BioPtr bio = MemoryBio(pem);
  return KeyPtr(
      PEM_read_bio_PrivateKey(bio.get(), nullptr, NoPassphrase, nullptr));
}

}  // namespace

absl::StatusOr<std::string> ReadSecretFile(absl::string_view flag,
                                           const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(
        absl::StrCat(Prefix(flag, path), "cannot open the file"));
  }
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) {
    return absl::NotFoundError(
        absl::StrCat(Prefix(flag, path), "cannot read the file"));
  }
  if (text.str().empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(Prefix(flag, path), "the file is empty"));
  }
  return text.str();
}

absl::StatusOr<std::string> ReadCertificatesPem(absl::string_view flag,
                                                const std::string& path) {
  absl::StatusOr<std::string> text = ReadSecretFile(flag, path);
  if (!text.ok()) return text.status();
  BioPtr bio = MemoryBio(*text);
  int count = 0;
  while (true) {
    X509Ptr cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
    if (cert == nullptr) break;
    ++count;
  }
  // The loop ends at the end of the text (PEM_R_NO_START_LINE after at least
  // one certificate) or at something that does not parse.
  const unsigned long last = ERR_peek_last_error();
  const bool clean_end = count > 0 && ERR_GET_LIB(last) == ERR_LIB_PEM &&
                         ERR_GET_REASON(last) == PEM_R_NO_START_LINE;
  const std::string reason = TakeOpenSslError();
  if (count == 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        Prefix(flag, path), "no PEM certificate found (",
        reason.empty() ? "not PEM" : reason, ")"));
  }
  if (!clean_end && last != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(Prefix(flag, path), "certificate ", count + 1,
                     " does not parse (", reason, ")"));
  }
  return *text;
}

absl::StatusOr<std::string> ReadPrivateKeyPem(absl::string_view flag,
                                              const std::string& path) {
  absl::StatusOr<std::string> text = ReadSecretFile(flag, path);
  if (!text.ok()) return text.status();
  KeyPtr key = PrivateKey(*text);
  const std::string reason = TakeOpenSslError();
  if (key == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        Prefix(flag, path),
        "no unencrypted PEM private key found (", reason.empty() ? "not PEM" : reason,
        ")"));
  }
  return *text;
}

absl::Status CheckKeyMatchesCertificate(const PemSource& cert,
                                        const PemSource& key) {
  X509Ptr certificate = FirstCertificate(cert.pem);
  KeyPtr private_key = PrivateKey(key.pem);
  const bool match = certificate != nullptr && private_key != nullptr &&
                     X509_check_private_key(certificate.get(),
                                            private_key.get()) == 1;
  TakeOpenSslError();
  if (!match) {
    return absl::InvalidArgumentError(absl::StrCat(
        key.flag, ": ", key.path, ": not the private key of the certificate in ",
        cert.flag, " (", cert.path, ")"));
  }
  return absl::OkStatus();
}

}  // namespace moe::security
