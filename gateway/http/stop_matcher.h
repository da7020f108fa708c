// Stop strings (OpenAI's `stop`) matched on a stream's text.
//
// Text arrives in pieces (each whole UTF-8); a stop string may straddle
// pieces. Feed() returns the text that is final: everything before the
// first occurrence of any stop string, less a tail that could still be the
// start of one (held back until the next piece tells). Once a stop string
// is found, the text from it on is dropped and stopped() is true. Finish()
// gives the held-back tail when the stream ends without a stop.
//
// Since stop strings are valid UTF-8 (they start on a character), a
// held-back tail starts on a character boundary: every piece returned is
// whole UTF-8 when the input is.
//
// Not thread-safe: one stream's reader owns it.
#ifndef MOE_GATEWAY_HTTP_STOP_MATCHER_H_
#define MOE_GATEWAY_HTTP_STOP_MATCHER_H_

#include <string>
#include <vector>

#include "absl/strings/string_view.h"

namespace moe {

class StopMatcher {
 public:
  // Empty strings in `stops` are ignored (they would match everywhere).
  explicit StopMatcher(std::vector<std::string> stops);

  // The text now final (possibly empty). After a stop, always "".
  std::string Feed(absl::string_view text);
  // The held-back tail ("" after a stop); the matcher is then spent.
  std::string Finish();

  bool stopped() const { return stopped_; }
  bool empty() const { return stops_.empty(); }

 private:
  std::vector<std::string> stops_;
  std::string pending_;  // held back: a prefix of some stop string
  bool stopped_ = false;
};

}  // namespace moe

#endif  // MOE_GATEWAY_HTTP_STOP_MATCHER_H_
