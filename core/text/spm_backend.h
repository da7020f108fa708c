// A plain-C++ face of libsentencepiece: its header declares its own
// `absl::string_view`, which clashes with Abseil's, so it is included only
// in spm_backend.cc, which includes no Abseil header.
#ifndef MOE_CORE_TEXT_SPM_BACKEND_H_
#define MOE_CORE_TEXT_SPM_BACKEND_H_

#include <memory>
#include <string>
#include <vector>

namespace moe::text {

class SpmBackend {
 public:
  // nullptr with `error` set when `path` is not a SentencePiece model.
  static std::unique_ptr<SpmBackend> Load(const std::string& path,
                                          std::string* error);
  ~SpmBackend();
  bool Encode(const std::string& text, std::vector<int>* ids,
              std::string* error) const;
  bool Decode(const std::vector<int>& ids, std::string* text,
              std::string* error) const;
  int size() const;
  int PieceToId(const std::string& piece) const;  // unk id when unknown
  std::string IdToPiece(int id) const;
  int unk_id() const;
  int bos_id() const;  // -1 when none
  int eos_id() const;
  bool IsControlOrUnknown(int id) const;

 private:
  SpmBackend();
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace moe::text

#endif  // MOE_CORE_TEXT_SPM_BACKEND_H_
