#include "core/text/jinja_builtins.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "core/status_macros.h"
#include "core/text/jinja_strings.h"

namespace moe::jinja {
namespace {

// item.a.b for selectattr/map(attribute=)/sort(attribute=).
Value AttrPath(const Value& item, absl::string_view path) {
  Value v = item;
  size_t pos = 0;
  while (true) {
    const size_t dot = path.find('.', pos);
    const absl::string_view part = path.substr(pos, dot == absl::string_view::npos
                                                        ? absl::string_view::npos
                                                        : dot - pos);
    int64_t index = 0;
    v = absl::SimpleAtoi(part, &index) && v.is_list() ? GetItem(v, Value::Int(index))
                                                      : GetAttr(v, part);
    if (dot == absl::string_view::npos) return v;
    pos = dot + 1;
  }
}

absl::StatusOr<int64_t> ToInt(const Value& v, int64_t fallback) {
  if (v.is_int() || v.is_bool()) return v.as_int();
  if (v.is_float()) {
    const double f = v.as_float();
    if (!(f > -9.2e18 && f < 9.2e18)) return fallback;
    return static_cast<int64_t>(f);
  }
  if (v.is_string()) {
    const std::string s(absl::StripAsciiWhitespace(v.str()));
    int64_t i = 0;
    if (absl::SimpleAtoi(s, &i)) return i;
    double f = 0;
    if (absl::SimpleAtod(s, &f) && f > -9.2e18 && f < 9.2e18) return static_cast<int64_t>(f);
  }
  return fallback;
}

// Sorts `items` by `key` (stable). Keys must all be numbers or all strings.
absl::Status SortValues(std::vector<Value>& items, const std::vector<Value>& keys, bool reverse) {
  bool numbers = true, strings = true;
  for (const Value& k : keys) {
    numbers = numbers && k.is_number() && !(k.is_float() && std::isnan(k.as_float()));
    strings = strings && k.is_string();
  }
  if (!numbers && !strings) return Err("sort: can only sort numbers or strings");
  std::vector<size_t> order(items.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    absl::StatusOr<bool> lt = reverse ? Less(keys[b], keys[a]) : Less(keys[a], keys[b]);
    return lt.ok() && *lt;
  });
  std::vector<Value> sorted;
  sorted.reserve(items.size());
  for (size_t i : order) sorted.push_back(items[i]);
  items = std::move(sorted);
  return absl::OkStatus();
}

Value SortKey(const Value& v, bool case_sensitive) {
  if (v.is_string() && !case_sensitive) return Value::String(absl::AsciiStrToLower(v.str()));
  return v;
}

absl::StatusOr<Value> Items(const Value& v, Budget& budget) {
  if (v.is_undefined()) return Value::List({});
  if (!v.is_dict()) return Err("items: ", TypeName(v), " is not a mapping");
  std::vector<Value> pairs;
  for (const auto& [k, item] : v.dict().items) pairs.push_back(Value::List({Value::String(k), item}));
  return MakeList(std::move(pairs), budget);
}

const absl::flat_hash_set<absl::string_view>& KnownFilters() {
  static const auto* const kFilters = new absl::flat_hash_set<absl::string_view>{
      "abs", "attr", "capitalize", "count", "d", "default", "dictsort", "e", "escape",
      "first", "float", "indent", "int", "items", "join", "last", "length", "list",
      "lower", "map", "max", "min", "reject", "rejectattr", "replace", "reverse",
      "round", "safe", "select", "selectattr", "sort", "string", "sum", "title",
      "tojson", "trim", "unique", "upper", "wordcount"};
  return *kFilters;
}

const absl::flat_hash_set<absl::string_view>& KnownTests() {
  static const auto* const kTests = new absl::flat_hash_set<absl::string_view>{
      "boolean", "callable", "defined", "divisibleby", "eq", "equalto", "even",
      "false", "float", "ge", "greaterthan", "gt", "in", "integer", "iterable",
      "le", "lessthan", "lower", "lt", "mapping", "ne", "none", "number", "odd",
      "sameas", "sequence", "string", "true", "undefined", "upper"};
  return *kTests;
}

absl::StatusOr<Value> SelectOrReject(absl::string_view name, const Value& subject,
                                     const Args& args, Budget& budget) {
  const bool by_attr = name == "selectattr" || name == "rejectattr";
  const bool keep_if = name == "select" || name == "selectattr";
  size_t next = 0;
  std::string attr;
  if (by_attr) {
    if (args.empty() || !args[0].is_string()) return Err(name, ": needs an attribute name");
    attr = args[0].str();
    next = 1;
  }
  std::string test;
  if (next < args.size()) {
    if (!args[next].is_string()) return Err(name, ": the test must be a name");
    test = args[next].str();
    if (!IsKnownTest(test)) return Err(name, ": unsupported test '", test, "'");
    ++next;
  }
  const Args test_args(args.begin() + static_cast<std::ptrdiff_t>(std::min(next, args.size())),
                       args.end());
  ASSIGN_OR_RETURN(std::vector<Value> items, Iterate(subject, budget));
  std::vector<Value> out;
  for (const Value& item : items) {
    const Value probe = by_attr ? AttrPath(item, attr) : item;
    bool pass = false;
    if (test.empty()) {
      pass = Truthy(probe);
    } else {
      ASSIGN_OR_RETURN(pass, ApplyTest(test, probe, test_args));
    }
    if (pass == keep_if) out.push_back(item);
  }
  return MakeList(std::move(out), budget);
}

absl::StatusOr<Value> MinMax(const Value& subject, bool max, Budget& budget) {
  ASSIGN_OR_RETURN(std::vector<Value> items, Iterate(subject, budget));
  if (items.empty()) return Value();
  Value best = items[0];
  for (size_t i = 1; i < items.size(); ++i) {
    ASSIGN_OR_RETURN(bool lt, max ? Less(best, items[i]) : Less(items[i], best));
    if (lt) best = items[i];
  }
  return best;
}

}  // namespace

bool IsKnownFilter(absl::string_view name) { return KnownFilters().contains(name); }
bool IsKnownTest(absl::string_view name) { return KnownTests().contains(name); }

absl::StatusOr<int64_t> Length(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::kUndefined: return 0;
    case Value::Kind::kString: return static_cast<int64_t>(Utf8Chars(v.str()).size());
    case Value::Kind::kList: return static_cast<int64_t>(v.list().size());
    case Value::Kind::kDict: return static_cast<int64_t>(v.dict().items.size());
    default: return Err("object of type '", TypeName(v), "' has no len()");
  }
}

absl::StatusOr<std::vector<Value>> Iterate(const Value& v, Budget& budget) {
  switch (v.kind()) {
    case Value::Kind::kUndefined: return std::vector<Value>{};
    case Value::Kind::kList: return v.list();
    case Value::Kind::kDict: {
      std::vector<Value> keys;
      for (const auto& item : v.dict().items) keys.push_back(Value::String(item.first));
      return keys;
    }
    case Value::Kind::kString: {
      RETURN_IF_ERROR(budget.Charge(v.str().size() * sizeof(Value)));
      std::vector<Value> chars;
      for (absl::string_view c : Utf8Chars(v.str())) chars.push_back(Value::String(std::string(c)));
      return chars;
    }
    default: return Err("'", TypeName(v), "' object is not iterable");
  }
}

absl::StatusOr<bool> Contains(const Value& haystack, const Value& needle, Budget& budget) {
  switch (haystack.kind()) {
    case Value::Kind::kUndefined: return false;
    case Value::Kind::kString:
      if (!needle.is_string())
        return Err("'in <string>' requires string as left operand, not ", TypeName(needle));
      RETURN_IF_ERROR(budget.Charge(haystack.str().size()));
      return absl::StrContains(haystack.str(), needle.str());
    case Value::Kind::kList:
      RETURN_IF_ERROR(budget.Charge(haystack.list().size()));
      for (const Value& item : haystack.list())
        if (Equals(item, needle)) return true;
      return false;
    case Value::Kind::kDict:
      return needle.is_string() && haystack.dict().Find(needle.str()) != nullptr;
    default: return Err("argument of type '", TypeName(haystack), "' is not iterable");
  }
}

Value GetAttr(const Value& obj, absl::string_view name) {
  if (obj.is_dict()) {
    const Value* v = obj.dict().Find(name);
    return v != nullptr ? *v : Value();
  }
  if (obj.is_namespace()) {
    const Value* v = obj.ns().Find(name);
    return v != nullptr ? *v : Value();
  }
  return Value();
}

Value GetItem(const Value& obj, const Value& key) {
  if (obj.is_dict() || obj.is_namespace()) {
    return key.is_string() ? GetAttr(obj, key.str()) : Value();
  }
  if (!(key.is_int() || key.is_bool())) return Value();
  int64_t i = key.as_int();
  if (obj.is_list()) {
    const int64_t n = static_cast<int64_t>(obj.list().size());
    if (i < 0) i += n;
    if (i < 0 || i >= n) return Value();
    return obj.list()[static_cast<size_t>(i)];
  }
  if (obj.is_string()) {
    std::vector<absl::string_view> chars = Utf8Chars(obj.str());
    const int64_t n = static_cast<int64_t>(chars.size());
    if (i < 0) i += n;
    if (i < 0 || i >= n) return Value();
    return Value::String(std::string(chars[static_cast<size_t>(i)]));
  }
  return Value();
}

absl::StatusOr<Value> Slice(const Value& obj, const Value* start_v, const Value* stop_v,
                            const Value* step_v, Budget& budget) {
  if (!obj.is_list() && !obj.is_string()) return Value();
  std::vector<absl::string_view> chars;
  if (obj.is_string()) chars = Utf8Chars(obj.str());
  const int64_t n = static_cast<int64_t>(obj.is_list() ? obj.list().size() : chars.size());
  auto part = [](const Value* v, absl::string_view what) -> absl::StatusOr<const Value*> {
    if (v == nullptr || v->is_none()) return nullptr;
    if (!v->is_int() && !v->is_bool()) return Err("slice ", what, " must be an integer");
    return v;
  };
  ASSIGN_OR_RETURN(const Value* st, part(step_v, "step"));
  ASSIGN_OR_RETURN(const Value* b, part(start_v, "start"));
  ASSIGN_OR_RETURN(const Value* e, part(stop_v, "stop"));
  int64_t step = st == nullptr ? 1 : st->as_int();
  if (step == 0) return Err("slice step cannot be zero");
  step = std::clamp<int64_t>(step, -(n + 1), n + 1);
  auto bound = [&](const Value* v, int64_t dflt) {
    if (v == nullptr) return dflt;
    int64_t x = v->as_int();
    if (x < 0) {
      x = x < -n ? -1 : x + n;
      if (x < 0) x = step < 0 ? -1 : 0;
    } else if (x >= n) {
      x = step < 0 ? n - 1 : n;
    }
    return x;
  };
  const int64_t begin = bound(b, step < 0 ? n - 1 : 0);
  const int64_t end = bound(e, step < 0 ? -1 : n);
  std::vector<Value> items;
  std::string s;
  for (int64_t i = begin; step > 0 ? i < end : i > end; i += step) {
    if (obj.is_list()) {
      items.push_back(obj.list()[static_cast<size_t>(i)]);
    } else {
      s.append(chars[static_cast<size_t>(i)].data(), chars[static_cast<size_t>(i)].size());
    }
  }
  if (obj.is_list()) return MakeList(std::move(items), budget);
  return MakeString(std::move(s), budget);
}

absl::StatusOr<bool> ApplyTest(absl::string_view name, const Value& v, const Args& args) {
  auto need_arg = [&]() -> absl::StatusOr<const Value*> {
    if (args.size() != 1) return Err("test '", name, "' takes one argument");
    return &args[0];
  };
  if (name != "divisibleby" && name != "eq" && name != "equalto" && name != "ne" &&
      name != "lt" && name != "lessthan" && name != "le" && name != "gt" &&
      name != "greaterthan" && name != "ge" && name != "in" && name != "sameas" &&
      !args.empty()) {
    return Err("test '", name, "' takes no arguments");
  }
  if (name == "defined") return !v.is_undefined();
  if (name == "undefined") return v.is_undefined();
  if (name == "none") return v.is_none();
  if (name == "string") return v.is_string();
  if (name == "number") return v.is_number();
  if (name == "integer") return v.is_int();
  if (name == "float") return v.is_float();
  if (name == "boolean") return v.is_bool();
  if (name == "true") return v.is_bool() && v.as_bool();
  if (name == "false") return v.is_bool() && !v.as_bool();
  if (name == "mapping") return v.is_dict();
  if (name == "iterable") return v.is_list() || v.is_dict() || v.is_string() || v.is_undefined();
  if (name == "sequence") return v.is_list() || v.is_dict() || v.is_string() || v.is_undefined();
  if (name == "callable") return v.is_macro();
  if (name == "lower") return v.is_string() && MapCase(v.str(), false) == v.str();
  if (name == "upper") return v.is_string() && MapCase(v.str(), true) == v.str();
  if (name == "even" || name == "odd") {
    if (!v.is_int() && !v.is_bool()) return Err("test '", name, "' needs an integer, got ", TypeName(v));
    const bool even = v.as_int() % 2 == 0;
    return name == "even" ? even : !even;
  }
  ASSIGN_OR_RETURN(const Value* other, need_arg());
  if (name == "divisibleby") {
    if (!v.is_int() || !other->is_int() || other->as_int() == 0)
      return Err("test 'divisibleby' needs integers and a non-zero divisor");
    if (other->as_int() == -1) return true;
    return v.as_int() % other->as_int() == 0;
  }
  if (name == "eq" || name == "equalto") return Equals(v, *other);
  if (name == "ne") return !Equals(v, *other);
  if (name == "sameas") return v.kind() == other->kind() && Equals(v, *other);
  if (name == "lt" || name == "lessthan") return Less(v, *other);
  if (name == "gt" || name == "greaterthan") return Less(*other, v);
  if (name == "le") {
    ASSIGN_OR_RETURN(bool gt, Less(*other, v));
    return !gt;
  }
  if (name == "ge") {
    ASSIGN_OR_RETURN(bool lt, Less(v, *other));
    return !lt;
  }
  if (name == "in") {
    Budget unbounded(std::numeric_limits<int64_t>::max());
    return Contains(*other, v, unbounded);
  }
  return Err("unsupported test '", name, "'");
}

absl::StatusOr<Value> ApplyFilter(absl::string_view name, const Value& v, const Args& args,
                                  const Kwargs& kwargs, Budget& budget) {
  if (name == "length" || name == "count") {
    ASSIGN_OR_RETURN(int64_t n, Length(v));
    return Value::Int(n);
  }
  if (name == "safe") return v;
  if (name == "string") return MakeString(ToDisplayString(v), budget);
  if (name == "trim") {
    const Value* chars = Arg(args, 0, kwargs, "chars");
    std::string set;
    if (chars != nullptr && !chars->is_none()) {
      ASSIGN_OR_RETURN(set, StrArg(chars, "trim: chars"));
    }
    return MakeString(Strip(ToDisplayString(v), set.empty() ? nullptr : &set, true, true),
                      budget);
  }
  if (name == "upper" || name == "lower")
    return MakeString(MapCase(ToDisplayString(v), name == "upper"), budget);
  if (name == "title" || name == "capitalize")
    return MakeString(Title(ToDisplayString(v), name == "capitalize"), budget);
  if (name == "escape" || name == "e") {
    std::string out;
    for (char c : ToDisplayString(v)) {
      switch (c) {
        case '&': out += "&amp;"; break;
        case '<': out += "&lt;"; break;
        case '>': out += "&gt;"; break;
        case '"': out += "&#34;"; break;
        case '\'': out += "&#39;"; break;
        default: out += c;
      }
    }
    return MakeString(std::move(out), budget);
  }
  if (name == "tojson") {
    const Value* indent_v = Arg(args, 0, kwargs, "indent");
    int64_t indent = -1;
    if (indent_v != nullptr && !indent_v->is_none()) {
      if (!indent_v->is_int() || indent_v->as_int() < 0 || indent_v->as_int() > 64)
        return Err("tojson: indent must be an integer in [0, 64]");
      indent = indent_v->as_int();
    }
    ASSIGN_OR_RETURN(std::string json, ToJson(v, static_cast<int>(indent)));
    return MakeString(std::move(json), budget);
  }
  if (name == "default" || name == "d") {
    const Value* fallback = Arg(args, 0, kwargs, "default_value");
    const Value* boolean = Arg(args, 1, kwargs, "boolean");
    const bool use = v.is_undefined() || (boolean != nullptr && Truthy(*boolean) && !Truthy(v));
    if (!use) return v;
    return fallback != nullptr ? *fallback : Value::String("");
  }
  if (name == "first" || name == "last") {
    if (v.is_string()) {
      std::vector<absl::string_view> chars = Utf8Chars(v.str());
      if (chars.empty()) return Value();
      return Value::String(std::string(name == "first" ? chars.front() : chars.back()));
    }
    ASSIGN_OR_RETURN(std::vector<Value> items, Iterate(v, budget));
    if (items.empty()) return Value();
    return name == "first" ? items.front() : items.back();
  }
  if (name == "join") {
    const Value* sep_v = Arg(args, 0, kwargs, "d");
    const Value* attr = Arg(args, 1, kwargs, "attribute");
    const std::string sep = sep_v != nullptr ? ToDisplayString(*sep_v) : "";
    ASSIGN_OR_RETURN(std::vector<Value> items, Iterate(v, budget));
    std::string out;
    for (size_t i = 0; i < items.size(); ++i) {
      if (i > 0) out += sep;
      const Value item = attr != nullptr && attr->is_string() ? AttrPath(items[i], attr->str())
                                                              : items[i];
      out += ToDisplayString(item);
      RETURN_IF_ERROR(budget.Charge(sep.size()));
    }
    return MakeString(std::move(out), budget);
  }
  if (name == "replace") {
    return Replace(ToDisplayString(v), Arg(args, 0, kwargs, "old"), Arg(args, 1, kwargs, "new"),
                   Arg(args, 2, kwargs, "count"), budget);
  }
  if (name == "list") {
    ASSIGN_OR_RETURN(std::vector<Value> items, Iterate(v, budget));
    return MakeList(std::move(items), budget);
  }
  if (name == "int") {
    const Value* fallback = Arg(args, 0, kwargs, "default");
    ASSIGN_OR_RETURN(int64_t i, ToInt(v, fallback != nullptr && fallback->is_int()
                                             ? fallback->as_int() : 0));
    return Value::Int(i);
  }
  if (name == "float") {
    if (v.is_number()) return Value::Float(v.as_float());
    double f = 0;
    if (v.is_string() && absl::SimpleAtod(absl::StripAsciiWhitespace(v.str()), &f))
      return Value::Float(f);
    const Value* fallback = Arg(args, 0, kwargs, "default");
    return Value::Float(fallback != nullptr && fallback->is_number() ? fallback->as_float() : 0.0);
  }
  if (name == "abs") {
    if (v.is_float()) return Value::Float(std::fabs(v.as_float()));
    if (!v.is_int() && !v.is_bool()) return Err("abs: bad operand type ", TypeName(v));
    if (v.as_int() == std::numeric_limits<int64_t>::min()) return Err("abs: integer overflow");
    return Value::Int(v.as_int() < 0 ? -v.as_int() : v.as_int());
  }
  if (name == "round") {
    if (!v.is_number()) return Err("round: bad operand type ", TypeName(v));
    const Value* prec_v = Arg(args, 0, kwargs, "precision");
    const Value* method_v = Arg(args, 1, kwargs, "method");
    const int64_t prec = prec_v != nullptr && prec_v->is_int() ? prec_v->as_int() : 0;
    if (prec < 0 || prec > 15) return Err("round: precision must be in [0, 15]");
    const std::string method = method_v != nullptr && method_v->is_string() ? method_v->str() : "common";
    const double scale = std::pow(10.0, static_cast<double>(prec));
    const double x = v.as_float() * scale;
    double r = 0;
    if (method == "common") r = std::round(x);
    else if (method == "ceil") r = std::ceil(x);
    else if (method == "floor") r = std::floor(x);
    else return Err("round: method must be common, ceil or floor");
    return Value::Float(r / scale);
  }
  if (name == "items") return Items(v, budget);
  if (name == "dictsort") {
    ASSIGN_OR_RETURN(Value pairs, Items(v, budget));
    std::vector<Value> items = pairs.list();
    std::vector<Value> keys;
    for (const Value& p : items) keys.push_back(SortKey(p.list()[0], false));
    RETURN_IF_ERROR(SortValues(items, keys, false));
    return MakeList(std::move(items), budget);
  }
  if (name == "select" || name == "reject" || name == "selectattr" || name == "rejectattr") {
    if (!kwargs.empty()) return Err(name, ": takes no keyword arguments");
    return SelectOrReject(name, v, args, budget);
  }
  if (name == "map") {
    ASSIGN_OR_RETURN(std::vector<Value> items, Iterate(v, budget));
    const Value* attr = Arg({}, 0, kwargs, "attribute");
    std::vector<Value> out;
    if (attr != nullptr) {
      if (!attr->is_string()) return Err("map: attribute must be a string");
      const Value* dflt = Arg({}, 0, kwargs, "default");
      for (const Value& item : items) {
        Value x = AttrPath(item, attr->str());
        out.push_back(x.is_undefined() && dflt != nullptr ? *dflt : x);
      }
    } else {
      if (args.empty() || !args[0].is_string()) return Err("map: needs a filter name or attribute=");
      const std::string filter = args[0].str();
      if (!IsKnownFilter(filter) || filter == "map") return Err("map: unsupported filter '", filter, "'");
      const Args rest(args.begin() + 1, args.end());
      for (const Value& item : items) {
        ASSIGN_OR_RETURN(Value x, ApplyFilter(filter, item, rest, kwargs, budget));
        out.push_back(std::move(x));
      }
    }
    return MakeList(std::move(out), budget);
  }
  if (name == "reverse") {
    if (v.is_string()) {
      std::vector<absl::string_view> chars = Utf8Chars(v.str());
      std::string out;
      for (auto it = chars.rbegin(); it != chars.rend(); ++it) out.append(it->data(), it->size());
      return MakeString(std::move(out), budget);
    }
    ASSIGN_OR_RETURN(std::vector<Value> items, Iterate(v, budget));
    std::reverse(items.begin(), items.end());
    return MakeList(std::move(items), budget);
  }
  if (name == "unique") {
    ASSIGN_OR_RETURN(std::vector<Value> items, Iterate(v, budget));
    std::vector<Value> out;
    for (const Value& item : items) {
      RETURN_IF_ERROR(budget.Charge(out.size()));
      bool seen = false;
      for (const Value& o : out) seen = seen || Equals(SortKey(o, false), SortKey(item, false));
      if (!seen) out.push_back(item);
    }
    return MakeList(std::move(out), budget);
  }
  if (name == "sort") {
    const Value* rev = Arg(args, 0, kwargs, "reverse");
    const Value* cs = Arg(args, 1, kwargs, "case_sensitive");
    const Value* attr = Arg(args, 2, kwargs, "attribute");
    ASSIGN_OR_RETURN(std::vector<Value> items, Iterate(v, budget));
    std::vector<Value> keys;
    for (const Value& item : items) {
      const Value k = attr != nullptr && attr->is_string() ? AttrPath(item, attr->str()) : item;
      keys.push_back(SortKey(k, cs != nullptr && Truthy(*cs)));
    }
    RETURN_IF_ERROR(SortValues(items, keys, rev != nullptr && Truthy(*rev)));
    return MakeList(std::move(items), budget);
  }
  if (name == "sum") {
    ASSIGN_OR_RETURN(std::vector<Value> items, Iterate(v, budget));
    const Value* attr = Arg({}, 0, kwargs, "attribute");
    const Value* start = Arg({}, 0, kwargs, "start");
    bool is_float = start != nullptr && start->is_float();
    int64_t isum = start != nullptr && start->is_number() && !is_float ? start->as_int() : 0;
    double fsum = start != nullptr && start->is_number() ? start->as_float() : 0;
    for (const Value& item : items) {
      const Value x = attr != nullptr && attr->is_string() ? AttrPath(item, attr->str()) : item;
      if (!x.is_number()) return Err("sum: unsupported operand type ", TypeName(x));
      if (x.is_float()) is_float = true;
      fsum += x.as_float();
      if (__builtin_add_overflow(isum, x.as_int(), &isum)) return Err("sum: integer overflow");
    }
    return is_float ? Value::Float(fsum) : Value::Int(isum);
  }
  if (name == "min" || name == "max") return MinMax(v, name == "max", budget);
  if (name == "attr") {
    ASSIGN_OR_RETURN(std::string attr, StrArg(Arg(args, 0, kwargs, "name"), "attr: name"));
    return GetAttr(v, attr);
  }
  if (name == "wordcount") {
    ASSIGN_OR_RETURN(Value words, Split(ToDisplayString(v), nullptr, nullptr, false, budget));
    return Value::Int(static_cast<int64_t>(words.list().size()));
  }
  if (name == "indent") {
    const Value* width_v = Arg(args, 0, kwargs, "width");
    const Value* first_v = Arg(args, 1, kwargs, "first");
    const Value* blank_v = Arg(args, 2, kwargs, "blank");
    std::string pad = "    ";
    if (width_v != nullptr && width_v->is_string()) pad = width_v->str();
    else if (width_v != nullptr && width_v->is_int())
      pad = std::string(static_cast<size_t>(std::clamp<int64_t>(width_v->as_int(), 0, 64)), ' ');
    const bool first = first_v != nullptr && Truthy(*first_v);
    const bool blank = blank_v != nullptr && Truthy(*blank_v);
    const std::string s = ToDisplayString(v);
    std::string out;
    size_t pos = 0;
    bool is_first = true;
    while (pos <= s.size()) {
      size_t nl = s.find('\n', pos);
      const std::string line = s.substr(pos, nl == std::string::npos ? std::string::npos : nl - pos);
      if ((!is_first || first) && (blank || !line.empty())) out += pad;
      out += line;
      RETURN_IF_ERROR(budget.Charge(pad.size() + line.size()));
      if (nl == std::string::npos) break;
      out += '\n';
      pos = nl + 1;
      is_first = false;
    }
    return MakeString(std::move(out), budget);
  }
  return Err("unsupported filter '", name, "'");
}

absl::StatusOr<Value> CallMethod(const Value& obj, absl::string_view name, const Args& args,
                                 const Kwargs& kwargs, Budget& budget) {
  if (obj.is_dict()) {
    if (name == "items") return Items(obj, budget);
    if (name == "keys" || name == "values") {
      std::vector<Value> out;
      for (const auto& [k, item] : obj.dict().items)
        out.push_back(name == "keys" ? Value::String(k) : item);
      return MakeList(std::move(out), budget);
    }
    if (name == "get") {
      const Value* key = Arg(args, 0, kwargs, "key");
      if (key == nullptr) return Err("get: needs a key");
      const Value found = GetItem(obj, *key);
      if (!found.is_undefined()) return found;
      const Value* dflt = Arg(args, 1, kwargs, "default");
      return dflt != nullptr ? *dflt : Value::None();
    }
  }
  if (!obj.is_string()) return absl::NotFoundError("no such method");
  return CallStringMethod(obj, name, args, kwargs, budget);
}

}  // namespace moe::jinja
