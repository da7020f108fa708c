#include "core/text/jinja_lexer.h"

#include <algorithm>
#include <cctype>

namespace moe::jinja {
namespace {

bool IsWs(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

class Lexer {
 public:
  explicit Lexer(absl::string_view src) : src_(src) {
    line_starts_.push_back(0);
    for (size_t i = 0; i < src.size(); ++i)
      if (src[i] == '\n') line_starts_.push_back(i + 1);
  }

  Location At(size_t off) const {
    auto it = std::upper_bound(line_starts_.begin(), line_starts_.end(), off);
    size_t idx = static_cast<size_t>(it - line_starts_.begin()) - 1;
    return Location{static_cast<int>(idx + 1),
                    static_cast<int>(off - line_starts_[idx] + 1)};
  }

  absl::StatusOr<std::vector<Token>> Run() {
    size_t pos = 0;
    bool strip_next = false;  // previous tag ended with '-'
    bool trim_next = false;   // previous tag was a block/comment (trim_blocks)
    while (true) {
      size_t tag = FindTag(pos);
      size_t text_begin = pos;
      size_t text_end = tag == absl::string_view::npos ? src_.size() : tag;
      // Leading whitespace control from the previous tag.
      if (strip_next) {
        while (text_begin < text_end && IsWs(src_[text_begin])) ++text_begin;
      } else if (trim_next && text_begin < text_end && src_[text_begin] == '\n') {
        ++text_begin;
      } else if (trim_next && text_begin + 1 < text_end && src_[text_begin] == '\r' &&
                 src_[text_begin + 1] == '\n') {
        text_begin += 2;
      }
      if (tag != absl::string_view::npos) {
        char kind = src_[tag + 1];
        char mod = tag + 2 < src_.size() ? src_[tag + 2] : '\0';
        if (mod == '-') {
          while (text_end > text_begin && IsWs(src_[text_end - 1])) --text_end;
        } else if ((kind == '%' || kind == '#') && mod != '+') {
          size_t k = tag;
          while (k > pos && (src_[k - 1] == ' ' || src_[k - 1] == '\t')) --k;
          if ((k == 0 || src_[k - 1] == '\n') && k >= text_begin) text_end = std::min(text_end, k);
          else if (k == 0 || src_[k - 1] == '\n') text_end = text_begin;
        }
      }
      if (text_end > text_begin)
        out_.push_back({Tok::kText, std::string(src_.substr(text_begin, text_end - text_begin)), At(text_begin)});
      if (tag == absl::string_view::npos) break;
      char kind = src_[tag + 1];
      size_t p = tag + 2;
      if (p < src_.size() && (src_[p] == '-' || src_[p] == '+')) ++p;
      if (kind == '#') {
        size_t end = src_.find("#}", p);
        if (end == absl::string_view::npos) {
          Fail("unterminated comment", At(tag));
          return error_;
        }
        strip_next = end > p && src_[end - 1] == '-';
        trim_next = true;
        pos = end + 2;
        continue;
      }
      out_.push_back({kind == '{' ? Tok::kVarBegin : Tok::kBlockBegin, "", At(tag)});
      pos = LexTag(p, kind == '{' ? '}' : '%', At(tag), &strip_next);
      if (!error_.ok()) return error_;
      trim_next = kind == '%';
    }
    out_.push_back({Tok::kEof, "", At(src_.size())});
    return std::move(out_);
  }

 private:
  size_t FindTag(size_t from) const {
    size_t p = from;
    while (true) {
      p = src_.find('{', p);
      if (p == absl::string_view::npos || p + 1 >= src_.size()) return absl::string_view::npos;
      char c = src_[p + 1];
      if (c == '{' || c == '%' || c == '#') return p;
      ++p;
    }
  }

  // Lexes the inside of a tag starting at p; returns the offset after it.
  size_t LexTag(size_t p, char close, Location open_loc, bool* strip_next) {
    int depth = 0;
    while (true) {
      while (p < src_.size() && IsWs(src_[p])) ++p;
      if (p >= src_.size()) {
        Fail(close == '}' ? "unclosed \"{{\"" : "unclosed \"{%\"", open_loc);
        return src_.size();
      }
      char c = src_[p];
      // Tag end, possibly with whitespace control.
      if (depth == 0) {
        size_t q = p;
        bool minus = false;
        if ((c == '-' || c == '+') && q + 2 < src_.size() + 0 && q + 1 < src_.size() &&
            src_[q + 1] == close && q + 2 < src_.size() && src_[q + 2] == '}') {
          minus = c == '-';
          q += 1;
        }
        if (q + 1 < src_.size() && src_[q] == close && src_[q + 1] == '}') {
          *strip_next = minus;
          out_.push_back({close == '}' ? Tok::kVarEnd : Tok::kBlockEnd, "", At(q)});
          return q + 2;
        }
      }
      Location loc = At(p);
      if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
        size_t s = p;
        while (p < src_.size() && (std::isalnum(static_cast<unsigned char>(src_[p])) || src_[p] == '_')) ++p;
        out_.push_back({Tok::kName, std::string(src_.substr(s, p - s)), loc});
      } else if (std::isdigit(static_cast<unsigned char>(c))) {
        size_t s = p;
        while (p < src_.size() && (std::isdigit(static_cast<unsigned char>(src_[p])) || src_[p] == '_')) ++p;
        bool is_float = false;
        if (p + 1 < src_.size() && src_[p] == '.' && std::isdigit(static_cast<unsigned char>(src_[p + 1]))) {
          is_float = true;
          ++p;
          while (p < src_.size() && std::isdigit(static_cast<unsigned char>(src_[p]))) ++p;
        }
        if (p < src_.size() && (src_[p] == 'e' || src_[p] == 'E')) {
          size_t q = p + 1;
          if (q < src_.size() && (src_[q] == '+' || src_[q] == '-')) ++q;
          if (q < src_.size() && std::isdigit(static_cast<unsigned char>(src_[q]))) {
            is_float = true;
            p = q;
            while (p < src_.size() && std::isdigit(static_cast<unsigned char>(src_[p]))) ++p;
          }
        }
        std::string num;
        for (size_t i = s; i < p; ++i) if (src_[i] != '_') num += src_[i];
        out_.push_back({is_float ? Tok::kFloat : Tok::kInt, num, loc});
      } else if (c == '\'' || c == '"') {
        std::string val;
        ++p;
        while (true) {
          if (p >= src_.size()) {
            Fail("unterminated string", loc);
            return src_.size();
          }
          char d = src_[p];
          if (d == c) { ++p; break; }
          if (d == '\\' && p + 1 < src_.size()) {
            char e = src_[p + 1];
            p += 2;
            switch (e) {
              case 'n': val += '\n'; break;
              case 't': val += '\t'; break;
              case 'r': val += '\r'; break;
              case '\\': val += '\\'; break;
              case '\'': val += '\''; break;
              case '"': val += '"'; break;
              case '0': val += '\0'; break;
              case 'b': val += '\b'; break;
              case 'f': val += '\f'; break;
              case '\n': break;
              default: val += '\\'; val += e; break;
            }
            continue;
          }
          val += d;
          ++p;
        }
        out_.push_back({Tok::kString, val, loc});
      } else {
        static const char* kTwo[] = {"==", "!=", "<=", ">=", "//", "**"};
        std::string op;
        for (const char* t : kTwo)
          if (src_.substr(p, 2) == t) op = t;
        if (op.empty()) {
          if (std::string("+-*/%~<>()[]{},.:|=").find(c) == std::string::npos) {
            Fail(std::string("unexpected character '") + c + "'", loc);
            return src_.size();
          }
          op = std::string(1, c);
          if (c == '(' || c == '[' || c == '{') ++depth;
          if ((c == ')' || c == ']' || c == '}') && depth > 0) --depth;
        }
        p += op.size();
        out_.push_back({Tok::kOp, op, loc});
      }
    }
  }

  // Records the first error; the caller returns right after.
  void Fail(const std::string& what, Location at) {
    if (error_.ok()) error_ = ErrorAt(at, what);
  }

  absl::string_view src_;
  absl::Status error_;
  std::vector<size_t> line_starts_;
  std::vector<Token> out_;
};

}  // namespace

absl::StatusOr<std::vector<Token>> Lex(absl::string_view source) {
  return Lexer(source).Run();
}

}  // namespace moe::jinja
