// Values of the Jinja evaluator: undefined, none, bool, int, float, string,
// list (also tuples), dict (string keys, insertion order), namespace and
// macro. Strings, lists and dicts are immutable and shared, so copying a
// Value is cheap; a namespace is the one mutable value (its attributes are
// assigned by `{% set ns.attr = ... %}`) and may never, directly or through
// a list or dict, hold a namespace: that keeps values acyclic.
#ifndef MOE_CORE_TEXT_JINJA_VALUE_H_
#define MOE_CORE_TEXT_JINJA_VALUE_H_

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace moe::jinja {

struct Stmt;  // a macro definition (jinja_parser.h)
class Value;

// Nesting of lists and dicts is bounded so that every recursive walk over a
// value (printing, tojson, comparison, destruction) stays shallow.
inline constexpr int kMaxValueDepth = 64;

struct ListData {
  std::vector<Value> items;
  int depth = 1;        // 1 + the deepest item's depth
  bool has_ns = false;  // holds a namespace somewhere
};

struct DictData {
  std::vector<std::pair<std::string, Value>> items;  // insertion order
  int depth = 1;
  bool has_ns = false;
  const Value* Find(absl::string_view key) const;
};

struct NamespaceData {
  std::vector<std::pair<std::string, Value>> attrs;
  const Value* Find(absl::string_view key) const;
  void Set(absl::string_view key, Value value);
};

class Value {
 public:
  enum class Kind {
    kUndefined, kNone, kBool, kInt, kFloat, kString, kList, kDict,
    kNamespace, kMacro
  };

  Value() = default;  // undefined
  static Value None();
  static Value Bool(bool b);
  static Value Int(int64_t i);
  static Value Float(double f);
  static Value String(std::string s);
  // INVALID_ARGUMENT-free factories: the caller checks depth with
  // Depth() against kMaxValueDepth (the evaluator reports where).
  static Value List(std::vector<Value> items);
  static Value Dict(std::vector<std::pair<std::string, Value>> items);
  static Value Namespace(std::shared_ptr<NamespaceData> ns);
  static Value Macro(const Stmt* macro);

  Kind kind() const { return kind_; }
  bool is_undefined() const { return kind_ == Kind::kUndefined; }
  bool is_none() const { return kind_ == Kind::kNone; }
  bool is_bool() const { return kind_ == Kind::kBool; }
  bool is_int() const { return kind_ == Kind::kInt; }
  bool is_float() const { return kind_ == Kind::kFloat; }
  bool is_number() const {  // bools count as ints, as in Python
    return kind_ == Kind::kInt || kind_ == Kind::kFloat || kind_ == Kind::kBool;
  }
  bool is_string() const { return kind_ == Kind::kString; }
  bool is_list() const { return kind_ == Kind::kList; }
  bool is_dict() const { return kind_ == Kind::kDict; }
  bool is_namespace() const { return kind_ == Kind::kNamespace; }
  bool is_macro() const { return kind_ == Kind::kMacro; }

  bool as_bool() const { return b_; }
  int64_t as_int() const { return kind_ == Kind::kBool ? (b_ ? 1 : 0) : i_; }
  double as_float() const {
    return kind_ == Kind::kFloat ? f_ : static_cast<double>(as_int());
  }
  const std::string& str() const { return *s_; }
  const std::vector<Value>& list() const { return list_->items; }
  const DictData& dict() const { return *dict_; }
  NamespaceData& ns() const { return *ns_; }
  const Stmt* macro() const { return macro_; }

  // Nesting depth: 0 for scalars, 1 + deepest child for lists and dicts.
  int Depth() const;
  // True when this value is or holds a namespace.
  bool HasNamespace() const;

 private:
  Kind kind_ = Kind::kUndefined;
  bool b_ = false;
  int64_t i_ = 0;
  double f_ = 0;
  std::shared_ptr<const std::string> s_;
  std::shared_ptr<const ListData> list_;
  std::shared_ptr<const DictData> dict_;
  std::shared_ptr<NamespaceData> ns_;
  const Stmt* macro_ = nullptr;
};

// Python truthiness (undefined is false).
bool Truthy(const Value& v);

// The Python type name, for error messages ("str", "list", "NoneType"...).
std::string TypeName(const Value& v);

// str(v) as Jinja prints it: undefined is "", None "None", True "True",
// floats as Python's repr, lists and dicts as Python's repr.
std::string ToDisplayString(const Value& v);

// Python's repr(v) (strings quoted).
std::string Repr(const Value& v);

// Python's repr of a float ("1.0", "0.1", "1e-05", "inf").
std::string FormatFloat(double f);

// json.dumps(v, ensure_ascii=False, indent=indent) as transformers' tojson
// does: indent < 0 means none (", " and ": " separators), otherwise pretty
// printed with "," and ": ". INVALID_ARGUMENT for undefined, namespaces and
// macros.
absl::StatusOr<std::string> ToJson(const Value& v, int indent);

// Python ==: numbers compare by value (True == 1), containers elementwise,
// values of different kinds are unequal; undefined equals undefined.
bool Equals(const Value& a, const Value& b);

// Python ordering (<): numbers, strings (by code point), lists
// lexicographically. INVALID_ARGUMENT (without a location) otherwise.
absl::StatusOr<bool> Less(const Value& a, const Value& b);

// The code points of a UTF-8 string as separate strings; each byte of an
// ill-formed sequence counts as one character.
std::vector<absl::string_view> Utf8Chars(absl::string_view s);

}  // namespace moe::jinja

#endif  // MOE_CORE_TEXT_JINJA_VALUE_H_
