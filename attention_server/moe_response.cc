#include "attention_server/moe_response.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "core/rpc/tensor_codec.h"

namespace moe {

absl::Status ReadMoeResponse(const v1::RunMoeResponse& response,
                             const std::string& source, int layer,
                             int64_t hidden, int64_t tokens, float* out,
                             MoeTokenFailures* failed) {
  if (response.error_code() != 0) {
    return absl::Status(
        static_cast<absl::StatusCode>(response.error_code()),
        absl::StrCat(source, ": layer ", layer, ": ",
                     response.error_message()));
  }
  absl::StatusOr<F32Rows> rows =
      DecodeF32Rows(response.output(), hidden, "router output");
  if (!rows.ok()) return absl::InternalError(rows.status().message());
  if (rows->rows != tokens) {
    return absl::InternalError(absl::StrCat(source, " returned ", rows->rows,
                                            " rows for ", tokens, " tokens"));
  }
  std::memcpy(out, rows->data,
              static_cast<size_t>(tokens * hidden) * sizeof(float));
  if (response.failed_tokens_size() == 0) return absl::OkStatus();
  for (int64_t t : response.failed_tokens()) {
    if (t < 0 || t >= tokens) {
      return absl::InternalError(absl::StrCat(
          source, " listed failed token ", t, " of ", tokens));
    }
    failed->tokens.push_back(t);
  }
  failed->status = absl::UnavailableError(
      absl::StrCat(source, ": ", response.failure_message()));
  return absl::OkStatus();
}

}  // namespace moe
