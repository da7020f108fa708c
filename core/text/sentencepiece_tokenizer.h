// A checkpoint that ships only tokenizer.model: Google's SentencePiece.
#ifndef MOE_CORE_TEXT_SENTENCEPIECE_TOKENIZER_H_
#define MOE_CORE_TEXT_SENTENCEPIECE_TOKENIZER_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "core/text/tokenizer.h"
#include "nlohmann/json.hpp"

namespace moe::text {

// `config`: tokenizer_config.json (null when absent); without one, BOS is
// added as SentencePiece models of Llama-style checkpoints expect.
absl::StatusOr<std::unique_ptr<Tokenizer>> MakeSentencePieceTokenizer(
    const std::string& model_path, const nlohmann::json& config);

}  // namespace moe::text

#endif  // MOE_CORE_TEXT_SENTENCEPIECE_TOKENIZER_H_
