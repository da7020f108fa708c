#include "core/text/jinja_strings.h"

#include <utf8proc.h>

#include <algorithm>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "core/status_macros.h"
#include "core/text/utf8.h"

namespace moe::jinja {

// Positional argument `i`, else keyword `name`, else null.
const Value* Arg(const Args& args, size_t i, const Kwargs& kwargs, absl::string_view name) {
  if (i < args.size()) return &args[i];
  for (const auto& [k, v] : kwargs)
    if (k == name) return &v;
  return nullptr;
}

absl::StatusOr<std::string> StrArg(const Value* v, absl::string_view what) {
  if (v == nullptr || !v->is_string()) return Err(what, " must be a string");
  return v->str();
}

absl::StatusOr<Value> MakeString(std::string s, Budget& budget) {
  RETURN_IF_ERROR(budget.Charge(s.size()));
  return Value::String(std::move(s));
}

absl::StatusOr<Value> MakeList(std::vector<Value> items, Budget& budget) {
  RETURN_IF_ERROR(budget.Charge(items.size() * sizeof(Value)));
  Value v = Value::List(std::move(items));
  if (v.Depth() > kMaxValueDepth) return Err("lists nested more than ", kMaxValueDepth, " deep");
  return v;
}

namespace {

bool IsSpace(absl::string_view c) {
  return c.size() == 1 && (c[0] == ' ' || c[0] == '\t' || c[0] == '\n' || c[0] == '\r' ||
                           c[0] == '\f' || c[0] == '\v');
}

bool IsLetter(absl::string_view c) {
  utf8proc_int32_t cp = 0;
  if (utf8proc_iterate(reinterpret_cast<const utf8proc_uint8_t*>(c.data()),
                       static_cast<utf8proc_ssize_t>(c.size()), &cp) <= 0)
    return false;
  const utf8proc_category_t cat = utf8proc_category(cp);
  return cat >= UTF8PROC_CATEGORY_LU && cat <= UTF8PROC_CATEGORY_LO;
}

// Python "{} {0} {name}".format(...).
absl::StatusOr<Value> Format(const std::string& s, const Args& args, const Kwargs& kwargs,
                             Budget& budget) {
  std::string out;
  size_t next_auto = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    if (c == '{' && i + 1 < s.size() && s[i + 1] == '{') {
      out += '{';
      ++i;
    } else if (c == '}' && i + 1 < s.size() && s[i + 1] == '}') {
      out += '}';
      ++i;
    } else if (c == '{') {
      const size_t close = s.find('}', i);
      if (close == std::string::npos) return Err("format: unmatched '{'");
      const std::string field = s.substr(i + 1, close - i - 1);
      const Value* v = nullptr;
      size_t index = 0;
      if (field.empty()) {
        index = next_auto++;
        v = index < args.size() ? &args[index] : nullptr;
      } else if (absl::SimpleAtoi(field, &index)) {
        v = index < args.size() ? &args[index] : nullptr;
      } else {
        v = Arg({}, 0, kwargs, field);
      }
      if (v == nullptr) return Err("format: no argument for {", field, "}");
      out += ToDisplayString(*v);
      i = close;
    } else if (c == '}') {
      return Err("format: single '}'");
    } else {
      out += c;
    }
  }
  return MakeString(std::move(out), budget);
}

}  // namespace

// Case mapping per code point (ill-formed bytes are kept as they are).
std::string MapCase(absl::string_view s, bool upper) {
  std::string out;
  out.reserve(s.size());
  for (absl::string_view c : Utf8Chars(s)) {
    utf8proc_int32_t cp = 0;
    if (utf8proc_iterate(reinterpret_cast<const utf8proc_uint8_t*>(c.data()),
                         static_cast<utf8proc_ssize_t>(c.size()), &cp) <= 0) {
      out.append(c.data(), c.size());
      continue;
    }
    text::AppendUtf8(static_cast<uint32_t>(upper ? utf8proc_toupper(cp) : utf8proc_tolower(cp)),
                     out);
  }
  return out;
}


// Python str.title() / str.capitalize().
std::string Title(absl::string_view s, bool only_first) {
  std::string out;
  bool prev_letter = false;
  bool first = true;
  for (absl::string_view c : Utf8Chars(s)) {
    const bool letter = IsLetter(c);
    const bool up = only_first ? first : (letter && !prev_letter);
    out += MapCase(c, up);
    prev_letter = letter;
    first = false;
  }
  return out;
}

// Python strip family; `chars` null strips whitespace.
std::string Strip(absl::string_view s, const std::string* chars, bool left, bool right) {
  std::vector<absl::string_view> cs = Utf8Chars(s);
  std::vector<absl::string_view> set;
  if (chars != nullptr) set = Utf8Chars(*chars);
  auto strip = [&](absl::string_view c) {
    if (chars == nullptr) return IsSpace(c);
    return std::find(set.begin(), set.end(), c) != set.end();
  };
  size_t b = 0, e = cs.size();
  if (left)
    while (b < e && strip(cs[b])) ++b;
  if (right)
    while (e > b && strip(cs[e - 1])) --e;
  if (b == e) return "";
  const char* begin = cs[b].data();
  const char* end = cs[e - 1].data() + cs[e - 1].size();
  return std::string(begin, static_cast<size_t>(end - begin));
}

absl::StatusOr<Value> Split(const std::string& s, const Value* sep_v, const Value* max_v,
                            bool from_right, Budget& budget) {
  int64_t maxsplit = -1;
  if (max_v != nullptr) {
    if (!max_v->is_int()) return Err("split: maxsplit must be an integer");
    maxsplit = max_v->as_int();
  }
  std::vector<std::string> parts;
  if (sep_v == nullptr || sep_v->is_none()) {
    // Runs of whitespace separate; no empty parts.
    std::vector<std::string> words;
    size_t i = 0;
    while (i < s.size()) {
      while (i < s.size() && absl::ascii_isspace(static_cast<unsigned char>(s[i]))) ++i;
      if (i >= s.size()) break;
      size_t j = i;
      while (j < s.size() && !absl::ascii_isspace(static_cast<unsigned char>(s[j]))) ++j;
      words.push_back(s.substr(i, j - i));
      i = j;
    }
    if (maxsplit >= 0 && static_cast<int64_t>(words.size()) > maxsplit + 1) {
      // Rare: redo keeping the rest unsplit.
      if (!from_right) {
        size_t pos = 0;
        for (int64_t k = 0; k < maxsplit; ++k) {
          pos = s.find(words[static_cast<size_t>(k)], pos) + words[static_cast<size_t>(k)].size();
        }
        std::vector<std::string> head(words.begin(), words.begin() + maxsplit);
        head.push_back(Strip(absl::string_view(s).substr(pos), nullptr, true, false));
        words = std::move(head);
      }
    }
    parts = std::move(words);
  } else {
    if (!sep_v->is_string()) return Err("split: separator must be a string");
    const std::string& sep = sep_v->str();
    if (sep.empty()) return Err("split: empty separator");
    if (!from_right) {
      size_t pos = 0;
      while (true) {
        size_t hit = s.find(sep, pos);
        if (hit == std::string::npos ||
            (maxsplit >= 0 && static_cast<int64_t>(parts.size()) >= maxsplit)) {
          parts.push_back(s.substr(pos));
          break;
        }
        parts.push_back(s.substr(pos, hit - pos));
        pos = hit + sep.size();
      }
    } else {
      size_t end = s.size();
      while (true) {
        size_t hit = end >= sep.size() ? s.rfind(sep, end - sep.size()) : std::string::npos;
        if (hit == std::string::npos ||
            (maxsplit >= 0 && static_cast<int64_t>(parts.size()) >= maxsplit)) {
          parts.push_back(s.substr(0, end));
          break;
        }
        parts.push_back(s.substr(hit + sep.size(), end - hit - sep.size()));
        end = hit;
      }
      std::reverse(parts.begin(), parts.end());
    }
  }
  std::vector<Value> items;
  for (std::string& p : parts) {
    ASSIGN_OR_RETURN(Value v, MakeString(std::move(p), budget));
    items.push_back(std::move(v));
  }
  return MakeList(std::move(items), budget);
}

absl::StatusOr<Value> Replace(const std::string& s, const Value* old_v, const Value* new_v,
                              const Value* count_v, Budget& budget) {
  ASSIGN_OR_RETURN(std::string from, StrArg(old_v, "replace: old"));
  ASSIGN_OR_RETURN(std::string to, StrArg(new_v, "replace: new"));
  int64_t count = -1;
  if (count_v != nullptr && !count_v->is_none()) {
    if (!count_v->is_int()) return Err("replace: count must be an integer");
    count = count_v->as_int();
  }
  std::string out;
  int64_t done = 0;
  if (from.empty()) {
    for (absl::string_view c : Utf8Chars(s)) {
      if (count < 0 || done < count) {
        out += to;
        ++done;
      }
      out.append(c.data(), c.size());
      RETURN_IF_ERROR(budget.Charge(to.size() + c.size()));
    }
    if (count < 0 || done < count) out += to;
    return MakeString(std::move(out), budget);
  }
  size_t pos = 0;
  while (true) {
    size_t hit = s.find(from, pos);
    if (hit == std::string::npos || (count >= 0 && done >= count)) break;
    out.append(s, pos, hit - pos);
    out += to;
    RETURN_IF_ERROR(budget.Charge(hit - pos + to.size()));
    pos = hit + from.size();
    ++done;
  }
  out.append(s, pos, std::string::npos);
  return MakeString(std::move(out), budget);
}


// item.a.b for selectattr/map(attribute=)/sort(attribute=).

absl::StatusOr<Value> CallStringMethod(const Value& obj, absl::string_view name, const Args& args,
                                       const Kwargs& kwargs, Budget& budget) {
  const std::string& s = obj.str();
  if (name == "strip" || name == "lstrip" || name == "rstrip") {
    const Value* chars = Arg(args, 0, kwargs, "chars");
    std::string set;
    const bool have = chars != nullptr && !chars->is_none();
    if (have) {
      ASSIGN_OR_RETURN(set, StrArg(chars, absl::StrCat(name, ": chars")));
    }
    return MakeString(Strip(s, have ? &set : nullptr, name != "rstrip", name != "lstrip"), budget);
  }
  if (name == "startswith" || name == "endswith") {
    const Value* arg = Arg(args, 0, kwargs, "prefix");
    if (arg == nullptr) return Err(name, ": needs an argument");
    std::vector<Value> options = arg->is_list() ? arg->list() : std::vector<Value>{*arg};
    for (const Value& o : options) {
      if (!o.is_string()) return Err(name, ": argument must be a string or a tuple of strings");
      if (name == "startswith" ? absl::StartsWith(s, o.str()) : absl::EndsWith(s, o.str()))
        return Value::Bool(true);
    }
    return Value::Bool(false);
  }
  if (name == "split" || name == "rsplit")
    return Split(s, Arg(args, 0, kwargs, "sep"), Arg(args, 1, kwargs, "maxsplit"),
                 name == "rsplit", budget);
  if (name == "upper" || name == "lower") return MakeString(MapCase(s, name == "upper"), budget);
  if (name == "title" || name == "capitalize")
    return MakeString(Title(s, name == "capitalize"), budget);
  if (name == "replace")
    return Replace(s, Arg(args, 0, kwargs, "old"), Arg(args, 1, kwargs, "new"),
                   Arg(args, 2, kwargs, "count"), budget);
  if (name == "find" || name == "rfind" || name == "count" || name == "index") {
    ASSIGN_OR_RETURN(std::string sub, StrArg(Arg(args, 0, kwargs, "sub"), absl::StrCat(name, ": argument")));
    RETURN_IF_ERROR(budget.Charge(s.size()));
    if (name == "count") {
      if (sub.empty()) return Value::Int(static_cast<int64_t>(Utf8Chars(s).size()) + 1);
      int64_t n = 0;
      for (size_t pos = s.find(sub); pos != std::string::npos; pos = s.find(sub, pos + sub.size())) ++n;
      return Value::Int(n);
    }
    const size_t hit = name == "rfind" ? s.rfind(sub) : s.find(sub);
    if (hit == std::string::npos) {
      if (name == "index") return Err("index: substring not found");
      return Value::Int(-1);
    }
    return Value::Int(static_cast<int64_t>(Utf8Chars(absl::string_view(s).substr(0, hit)).size()));
  }
  if (name == "format") return Format(s, args, kwargs, budget);
  if (name == "join") {
    if (args.size() != 1) return Err("join: takes one argument");
    return ApplyFilter("join", args[0], {obj}, {}, budget);
  }
  if (name == "removeprefix" || name == "removesuffix") {
    ASSIGN_OR_RETURN(std::string affix, StrArg(Arg(args, 0, kwargs, "affix"), absl::StrCat(name, ": argument")));
    absl::string_view view = s;
    if (name == "removeprefix") absl::ConsumePrefix(&view, affix);
    else absl::ConsumeSuffix(&view, affix);
    return MakeString(std::string(view), budget);
  }
  if (name == "isdigit" || name == "isalpha" || name == "isalnum" || name == "isspace" ||
      name == "islower" || name == "isupper") {
    if (name == "islower" || name == "isupper") {
      bool cased = false;
      for (unsigned char c : s) cased = cased || absl::ascii_isalpha(c);
      return Value::Bool(cased && MapCase(s, name == "isupper") == s);
    }
    if (s.empty()) return Value::Bool(false);
    for (unsigned char c : s) {
      const bool ok = name == "isdigit"   ? absl::ascii_isdigit(c)
                      : name == "isalpha" ? absl::ascii_isalpha(c)
                      : name == "isalnum" ? absl::ascii_isalnum(c)
                                          : absl::ascii_isspace(c);
      if (!ok) return Value::Bool(false);
    }
    return Value::Bool(true);
  }
  if (name == "splitlines") {
    std::vector<Value> lines;
    size_t pos = 0;
    while (pos < s.size()) {
      size_t nl = s.find_first_of("\r\n", pos);
      if (nl == std::string::npos) nl = s.size();
      lines.push_back(Value::String(s.substr(pos, nl - pos)));
      RETURN_IF_ERROR(budget.Charge(nl - pos + sizeof(Value)));
      if (nl < s.size() && s[nl] == '\r' && nl + 1 < s.size() && s[nl + 1] == '\n') ++nl;
      pos = nl + 1;
    }
    return MakeList(std::move(lines), budget);
  }
  return absl::NotFoundError("no such method");
}

}  // namespace moe::jinja
