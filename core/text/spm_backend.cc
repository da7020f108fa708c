#include "core/text/spm_backend.h"

#include <sentencepiece_processor.h>

namespace moe::text {

struct SpmBackend::Impl {
  sentencepiece::SentencePieceProcessor processor;
};

SpmBackend::SpmBackend() : impl_(new Impl()) {}
SpmBackend::~SpmBackend() = default;

std::unique_ptr<SpmBackend> SpmBackend::Load(const std::string& path,
                                             std::string* error) {
  std::unique_ptr<SpmBackend> backend(new SpmBackend());
  const auto status = backend->impl_->processor.Load(path);
  if (!status.ok()) {
    *error = status.ToString();
    return nullptr;
  }
  return backend;
}

bool SpmBackend::Encode(const std::string& text, std::vector<int>* ids,
                        std::string* error) const {
  const auto status = impl_->processor.Encode(text, ids);
  if (!status.ok()) *error = status.ToString();
  return status.ok();
}

bool SpmBackend::Decode(const std::vector<int>& ids, std::string* text,
                        std::string* error) const {
  const auto status = impl_->processor.Decode(ids, text);
  if (!status.ok()) *error = status.ToString();
  return status.ok();
}

int SpmBackend::size() const { return impl_->processor.GetPieceSize(); }
int SpmBackend::PieceToId(const std::string& piece) const {
  return impl_->processor.PieceToId(piece);
}
std::string SpmBackend::IdToPiece(int id) const {
  return impl_->processor.IdToPiece(id);
}
int SpmBackend::unk_id() const { return impl_->processor.unk_id(); }
int SpmBackend::bos_id() const { return impl_->processor.bos_id(); }
int SpmBackend::eos_id() const { return impl_->processor.eos_id(); }
bool SpmBackend::IsControlOrUnknown(int id) const {
  return impl_->processor.IsControl(id) || impl_->processor.IsUnknown(id);
}

}  // namespace moe::text
