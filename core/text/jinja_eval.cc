#include "core/text/jinja_eval.h"

#include <cmath>
#include <ctime>
#include <limits>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "core/status_macros.h"
#include "core/text/jinja_builtins.h"
#include "core/text/jinja_error.h"

namespace moe::jinja {
namespace {

using Frame = absl::flat_hash_map<std::string, Value>;

// A builtin's bare error, placed at `loc`.
absl::Status Located(Location loc, const absl::Status& s) {
  return ErrorAt(loc, s.message());
}

// What a name stands for in messages about an expression ("messages[0]",
// "x.y"): only names and attribute chains are spelled out.
std::string Spell(const Expr& e) {
  if (e.kind == Expr::Kind::kName) return e.name;
  if (e.kind == Expr::Kind::kAttr) return absl::StrCat(Spell(*e.args[0]), ".", e.name);
  return "value";
}

class Evaluator {
 public:
  Evaluator(std::vector<std::pair<std::string, Value>> globals, const RenderLimits& limits)
      : limits_(limits), budget_(limits.max_bytes) {
    frames_.emplace_back();
    for (auto& [k, v] : globals) frames_[0][k] = std::move(v);
  }

  absl::StatusOr<std::string> Run(const Program& program) {
    std::string out;
    ASSIGN_OR_RETURN(Flow flow, ExecBody(program.body, out));
    (void)flow;
    return out;
  }

 private:
  enum class Flow { kNormal, kBreak, kContinue };

  // ---- bounds ----
  absl::Status Enter(Location loc) {
    if (++steps_ > limits_.max_steps)
      return ErrorAt(loc, absl::StrCat("rendering takes more than ", limits_.max_steps, " steps"));
    if (++depth_ > limits_.max_depth) {
      --depth_;
      return ErrorAt(loc, absl::StrCat("rendering nests deeper than ", limits_.max_depth,
                                       " levels (recursive macro?)"));
    }
    return absl::OkStatus();
  }
  struct Exit {
    int* depth;
    ~Exit() { --*depth; }
  };
  absl::Status Charge(Location loc, size_t bytes) {
    absl::Status s = budget_.Charge(bytes);
    if (!s.ok())
      return ErrorAt(loc, absl::StrCat("output or intermediate values exceed ",
                                       limits_.max_bytes, " bytes"));
    return s;
  }
  absl::StatusOr<Value> MakeList(Location loc, std::vector<Value> items) {
    RETURN_IF_ERROR(Charge(loc, items.size() * sizeof(Value)));
    Value v = Value::List(std::move(items));
    if (v.Depth() > kMaxValueDepth)
      return ErrorAt(loc, absl::StrCat("lists or dicts nested more than ", kMaxValueDepth, " deep"));
    return v;
  }
  absl::StatusOr<Value> MakeString(Location loc, std::string s) {
    RETURN_IF_ERROR(Charge(loc, s.size()));
    return Value::String(std::move(s));
  }

  // ---- scopes ----
  const Value* Lookup(const std::string& name) const {
    for (size_t i = frames_.size(); i-- > base_;) {
      auto it = frames_[i].find(name);
      if (it != frames_[i].end()) return &it->second;
    }
    auto it = frames_[0].find(name);
    return it != frames_[0].end() ? &it->second : nullptr;
  }

  absl::Status Assign(const Stmt& s, const std::vector<std::string>& targets, Value value) {
    if (targets.size() == 1) {
      frames_.back()[targets[0]] = std::move(value);
      return absl::OkStatus();
    }
    if (!value.is_list() || value.list().size() != targets.size())
      return ErrorAt(s.loc, absl::StrCat("cannot unpack ", TypeName(value), " into ",
                                         targets.size(), " names"));
    for (size_t i = 0; i < targets.size(); ++i) frames_.back()[targets[i]] = value.list()[i];
    return absl::OkStatus();
  }

  // ---- statements ----
  absl::StatusOr<Flow> ExecBody(const Body& body, std::string& out) {
    for (const auto& stmt : body) {
      ASSIGN_OR_RETURN(Flow flow, Exec(*stmt, out));
      if (flow != Flow::kNormal) return flow;
    }
    return Flow::kNormal;
  }

  absl::StatusOr<Flow> Exec(const Stmt& s, std::string& out) {
    RETURN_IF_ERROR(Enter(s.loc));
    Exit exit{&depth_};
    switch (s.kind) {
      case Stmt::Kind::kText:
        RETURN_IF_ERROR(Charge(s.loc, s.text.size()));
        out += s.text;
        return Flow::kNormal;
      case Stmt::Kind::kOutput: {
        ASSIGN_OR_RETURN(Value v, Eval(*s.expr));
        if (v.is_string()) {
          RETURN_IF_ERROR(Charge(s.loc, v.str().size()));
          out += v.str();
        } else {
          const std::string text = ToDisplayString(v);
          RETURN_IF_ERROR(Charge(s.loc, text.size()));
          out += text;
        }
        return Flow::kNormal;
      }
      case Stmt::Kind::kIf:
        for (const auto& [cond, body] : s.branches) {
          bool take = cond == nullptr;
          if (!take) {
            ASSIGN_OR_RETURN(Value c, Eval(*cond));
            take = Truthy(c);
          }
          if (take) return ExecBody(body, out);
        }
        return Flow::kNormal;
      case Stmt::Kind::kFor:
        return ExecFor(s, out);
      case Stmt::Kind::kSet: {
        ASSIGN_OR_RETURN(Value v, Eval(*s.expr));
        if (s.attr.empty()) {
          RETURN_IF_ERROR(Assign(s, s.targets, std::move(v)));
          return Flow::kNormal;
        }
        const Value* ns = Lookup(s.targets[0]);
        if (ns == nullptr || !ns->is_namespace())
          return ErrorAt(s.loc, absl::StrCat("cannot assign attribute '", s.attr, "' on '",
                                             s.targets[0], "': it is not a namespace()"));
        if (v.HasNamespace())
          return ErrorAt(s.loc, "a namespace attribute cannot hold a namespace");
        ns->ns().Set(s.attr, std::move(v));
        return Flow::kNormal;
      }
      case Stmt::Kind::kSetBlock: {
        std::string text;
        ASSIGN_OR_RETURN(Flow flow, ExecBody(s.body, text));
        (void)flow;
        RETURN_IF_ERROR(Assign(s, s.targets, Value::String(std::move(text))));
        return Flow::kNormal;
      }
      case Stmt::Kind::kMacro:
        frames_.back()[s.name] = Value::Macro(&s);
        return Flow::kNormal;
      case Stmt::Kind::kBreak:
        return Flow::kBreak;
      case Stmt::Kind::kContinue:
        return Flow::kContinue;
    }
    return Flow::kNormal;
  }

  // Pops the frames a for-loop pushed, whatever way it leaves.
  struct FramePop {
    std::vector<Frame>* frames;
    ~FramePop() { frames->pop_back(); }
  };

  absl::StatusOr<Flow> ExecFor(const Stmt& s, std::string& out) {
    ASSIGN_OR_RETURN(Value iterable, Eval(*s.expr));
    absl::StatusOr<std::vector<Value>> all = Iterate(iterable, budget_);
    if (!all.ok()) return Located(s.expr->loc, all.status());
    std::vector<Value> items;
    if (s.cond == nullptr) {
      items = *std::move(all);
    } else {
      for (Value& item : *all) {
        RETURN_IF_ERROR(Enter(s.loc));
        Exit exit{&depth_};
        frames_.emplace_back();
        FramePop pop{&frames_};
        RETURN_IF_ERROR(Assign(s, s.targets, item));
        ASSIGN_OR_RETURN(Value keep, Eval(*s.cond));
        if (Truthy(keep)) items.push_back(std::move(item));
      }
    }
    const int64_t n = static_cast<int64_t>(items.size());
    for (int64_t i = 0; i < n; ++i) {
      RETURN_IF_ERROR(Enter(s.loc));
      Exit exit{&depth_};
      frames_.emplace_back();
      FramePop pop{&frames_};
      const Value& item = items[static_cast<size_t>(i)];
      RETURN_IF_ERROR(Assign(s, s.targets, item));
      std::vector<std::pair<std::string, Value>> loop = {
          {"index", Value::Int(i + 1)},      {"index0", Value::Int(i)},
          {"revindex", Value::Int(n - i)},   {"revindex0", Value::Int(n - i - 1)},
          {"first", Value::Bool(i == 0)},    {"last", Value::Bool(i == n - 1)},
          {"length", Value::Int(n)},         {"depth", Value::Int(1)},
          {"depth0", Value::Int(0)}};
      if (i > 0) loop.emplace_back("previtem", items[static_cast<size_t>(i - 1)]);
      if (i + 1 < n) loop.emplace_back("nextitem", items[static_cast<size_t>(i + 1)]);
      frames_.back()["loop"] = Value::Dict(std::move(loop));
      ASSIGN_OR_RETURN(Flow flow, ExecBody(s.body, out));
      if (flow == Flow::kBreak) break;
    }
    if (n == 0) return ExecBody(s.else_body, out);
    return Flow::kNormal;
  }

  // ---- expressions ----
  absl::StatusOr<Value> Eval(const Expr& e) {
    RETURN_IF_ERROR(Enter(e.loc));
    Exit exit{&depth_};
    switch (e.kind) {
      case Expr::Kind::kLiteral:
        return e.literal;
      case Expr::Kind::kName: {
        const Value* v = Lookup(e.name);
        return v != nullptr ? *v : Value();
      }
      case Expr::Kind::kList:
      case Expr::Kind::kTuple: {
        std::vector<Value> items;
        for (const auto& arg : e.args) {
          ASSIGN_OR_RETURN(Value v, Eval(*arg));
          items.push_back(std::move(v));
        }
        return MakeList(e.loc, std::move(items));
      }
      case Expr::Kind::kDict: {
        std::vector<std::pair<std::string, Value>> items;
        for (size_t i = 0; i + 1 < e.args.size(); i += 2) {
          ASSIGN_OR_RETURN(Value k, Eval(*e.args[i]));
          if (!k.is_string())
            return ErrorAt(e.args[i]->loc, absl::StrCat("dict keys must be strings, not ",
                                                        TypeName(k)));
          ASSIGN_OR_RETURN(Value v, Eval(*e.args[i + 1]));
          bool replaced = false;
          for (auto& item : items) {
            if (item.first == k.str()) {
              item.second = v;
              replaced = true;
            }
          }
          if (!replaced) items.emplace_back(k.str(), std::move(v));
        }
        RETURN_IF_ERROR(Charge(e.loc, items.size() * sizeof(Value)));
        Value d = Value::Dict(std::move(items));
        if (d.Depth() > kMaxValueDepth)
          return ErrorAt(e.loc, absl::StrCat("lists or dicts nested more than ", kMaxValueDepth,
                                             " deep"));
        return d;
      }
      case Expr::Kind::kAttr: {
        ASSIGN_OR_RETURN(Value obj, Eval(*e.args[0]));
        return GetAttr(obj, e.name);
      }
      case Expr::Kind::kSubscript: {
        ASSIGN_OR_RETURN(Value obj, Eval(*e.args[0]));
        ASSIGN_OR_RETURN(Value key, Eval(*e.args[1]));
        return GetItem(obj, key);
      }
      case Expr::Kind::kSlice: {
        ASSIGN_OR_RETURN(Value obj, Eval(*e.args[0]));
        Value parts[3];
        for (int i = 0; i < 3; ++i) {
          if (e.args[static_cast<size_t>(i) + 1] != nullptr) {
            ASSIGN_OR_RETURN(parts[i], Eval(*e.args[static_cast<size_t>(i) + 1]));
          }
        }
        auto ptr = [&](int i) { return e.args[static_cast<size_t>(i) + 1] ? &parts[i] : nullptr; };
        absl::StatusOr<Value> v = Slice(obj, ptr(0), ptr(1), ptr(2), budget_);
        if (!v.ok()) return Located(e.loc, v.status());
        return v;
      }
      case Expr::Kind::kUnary: {
        ASSIGN_OR_RETURN(Value v, Eval(*e.args[0]));
        if (!v.is_number())
          return ErrorAt(e.loc, absl::StrCat("bad operand type for unary ", e.name, ": '",
                                             TypeName(v), "'"));
        if (e.name == "+") return v.is_bool() ? Value::Int(v.as_int()) : v;
        if (v.is_float()) return Value::Float(-v.as_float());
        if (v.as_int() == std::numeric_limits<int64_t>::min())
          return ErrorAt(e.loc, "integer overflow");
        return Value::Int(-v.as_int());
      }
      case Expr::Kind::kBinary: {
        ASSIGN_OR_RETURN(Value a, Eval(*e.args[0]));
        ASSIGN_OR_RETURN(Value b, Eval(*e.args[1]));
        return Binary(e, a, b);
      }
      case Expr::Kind::kCompare: {
        ASSIGN_OR_RETURN(Value left, Eval(*e.args[0]));
        for (size_t i = 0; i < e.ops.size(); ++i) {
          ASSIGN_OR_RETURN(Value right, Eval(*e.args[i + 1]));
          absl::StatusOr<bool> r = Compare(e.ops[i], left, right);
          if (!r.ok()) return Located(e.loc, r.status());
          if (!*r) return Value::Bool(false);
          left = std::move(right);
        }
        return Value::Bool(true);
      }
      case Expr::Kind::kAnd:
      case Expr::Kind::kOr: {
        ASSIGN_OR_RETURN(Value a, Eval(*e.args[0]));
        if (Truthy(a) == (e.kind == Expr::Kind::kOr)) return a;
        return Eval(*e.args[1]);
      }
      case Expr::Kind::kNot: {
        ASSIGN_OR_RETURN(Value v, Eval(*e.args[0]));
        return Value::Bool(!Truthy(v));
      }
      case Expr::Kind::kTest: {
        ASSIGN_OR_RETURN(Value subject, Eval(*e.args[0]));
        Args args;
        for (size_t i = 1; i < e.args.size(); ++i) {
          ASSIGN_OR_RETURN(Value v, Eval(*e.args[i]));
          args.push_back(std::move(v));
        }
        absl::StatusOr<bool> r = ApplyTest(e.name, subject, args);
        if (!r.ok()) return Located(e.loc, r.status());
        return Value::Bool(*r != e.negated);
      }
      case Expr::Kind::kFilter: {
        ASSIGN_OR_RETURN(Value subject, Eval(*e.args[0]));
        Args args;
        Kwargs kwargs;
        RETURN_IF_ERROR(EvalArgs(e, args, kwargs));
        absl::StatusOr<Value> r = ApplyFilter(e.name, subject, args, kwargs, budget_);
        if (!r.ok())
          return ErrorAt(e.loc, absl::StrCat("filter '", e.name, "': ", r.status().message()));
        return r;
      }
      case Expr::Kind::kCall:
        return Call(e);
      case Expr::Kind::kCond: {
        ASSIGN_OR_RETURN(Value c, Eval(*e.args[1]));
        if (Truthy(c)) return Eval(*e.args[0]);
        if (e.args[2] == nullptr) return Value();
        return Eval(*e.args[2]);
      }
    }
    return Value();
  }

  absl::Status EvalArgs(const Expr& e, Args& args, Kwargs& kwargs) {
    for (size_t i = 1; i < e.args.size(); ++i) {
      ASSIGN_OR_RETURN(Value v, Eval(*e.args[i]));
      args.push_back(std::move(v));
    }
    for (const auto& [k, arg] : e.kwargs) {
      ASSIGN_OR_RETURN(Value v, Eval(*arg));
      kwargs.emplace_back(k, std::move(v));
    }
    return absl::OkStatus();
  }

  static absl::StatusOr<bool> Compare(const std::string& op, const Value& a, const Value& b) {
    Budget unbounded(std::numeric_limits<int64_t>::max());
    if (op == "==") return Equals(a, b);
    if (op == "!=") return !Equals(a, b);
    if (op == "in") return Contains(b, a, unbounded);
    if (op == "not in") {
      ASSIGN_OR_RETURN(bool in, Contains(b, a, unbounded));
      return !in;
    }
    if (op == "<") return Less(a, b);
    if (op == ">") return Less(b, a);
    if (op == "<=") {
      ASSIGN_OR_RETURN(bool gt, Less(b, a));
      return !gt;
    }
    ASSIGN_OR_RETURN(bool lt, Less(a, b));  // ">="
    return !lt;
  }

  absl::StatusOr<Value> Binary(const Expr& e, const Value& a, const Value& b) {
    const std::string& op = e.name;
    auto type_error = [&]() {
      return ErrorAt(e.loc, absl::StrCat("unsupported operand type(s) for ", op, ": '",
                                         TypeName(a), "' and '", TypeName(b), "'"));
    };
    if (op == "~") {
      return MakeString(e.loc, ToDisplayString(a) + ToDisplayString(b));
    }
    if (op == "+") {
      if (a.is_string() && b.is_string()) {
        RETURN_IF_ERROR(Charge(e.loc, a.str().size() + b.str().size()));
        std::string s;
        s.reserve(a.str().size() + b.str().size());
        s += a.str();
        s += b.str();
        return Value::String(std::move(s));
      }
      if (a.is_list() && b.is_list()) {
        std::vector<Value> items = a.list();
        items.insert(items.end(), b.list().begin(), b.list().end());
        return MakeList(e.loc, std::move(items));
      }
    }
    if (op == "*" && ((a.is_string() || a.is_list()) && (b.is_int() || b.is_bool()))) {
      const int64_t count = std::max<int64_t>(0, b.as_int());
      const size_t unit = a.is_string() ? a.str().size() : a.list().size() * sizeof(Value);
      if (count > 0 && unit > 0 &&
          static_cast<uint64_t>(count) > static_cast<uint64_t>(limits_.max_bytes) / unit)
        return ErrorAt(e.loc, absl::StrCat("repetition exceeds ", limits_.max_bytes, " bytes"));
      if (a.is_string()) {
        std::string s;
        for (int64_t i = 0; i < count; ++i) s += a.str();
        return MakeString(e.loc, std::move(s));
      }
      std::vector<Value> items;
      for (int64_t i = 0; i < count; ++i) items.insert(items.end(), a.list().begin(), a.list().end());
      return MakeList(e.loc, std::move(items));
    }
    if (!a.is_number() || !b.is_number()) return type_error();
    const bool floats = a.is_float() || b.is_float();
    if (op == "/") {
      if (b.as_float() == 0) return ErrorAt(e.loc, "division by zero");
      return Value::Float(a.as_float() / b.as_float());
    }
    if (floats) {
      const double x = a.as_float(), y = b.as_float();
      if (op == "+") return Value::Float(x + y);
      if (op == "-") return Value::Float(x - y);
      if (op == "*") return Value::Float(x * y);
      if (op == "**") return Value::Float(std::pow(x, y));
      if (y == 0) return ErrorAt(e.loc, "division by zero");
      if (op == "//") return Value::Float(std::floor(x / y));
      double m = std::fmod(x, y);
      if (m != 0 && ((m < 0) != (y < 0))) m += y;
      return Value::Float(m);  // "%"
    }
    const int64_t x = a.as_int(), y = b.as_int();
    int64_t r = 0;
    if (op == "+" || op == "-" || op == "*") {
      const bool overflow = op == "+"   ? __builtin_add_overflow(x, y, &r)
                            : op == "-" ? __builtin_sub_overflow(x, y, &r)
                                        : __builtin_mul_overflow(x, y, &r);
      if (overflow) return ErrorAt(e.loc, "integer overflow");
      return Value::Int(r);
    }
    if (op == "**") {
      if (y < 0) return Value::Float(std::pow(static_cast<double>(x), static_cast<double>(y)));
      int64_t result = 1, base = x, exp = y;
      while (exp > 0) {
        if ((exp & 1) && __builtin_mul_overflow(result, base, &result))
          return ErrorAt(e.loc, "integer overflow");
        exp >>= 1;
        if (exp > 0 && __builtin_mul_overflow(base, base, &base))
          return ErrorAt(e.loc, "integer overflow");
      }
      return Value::Int(result);
    }
    if (y == 0) return ErrorAt(e.loc, "division by zero");
    if (x == std::numeric_limits<int64_t>::min() && y == -1) {
      if (op == "%") return Value::Int(0);
      return ErrorAt(e.loc, "integer overflow");
    }
    int64_t q = x / y, m = x % y;
    if (m != 0 && ((m < 0) != (y < 0))) {
      --q;
      m += y;
    }
    return Value::Int(op == "//" ? q : m);
  }

  absl::StatusOr<Value> Call(const Expr& e) {
    const Expr& callee = *e.args[0];
    Args args;
    Kwargs kwargs;
    if (callee.kind == Expr::Kind::kAttr) {
      ASSIGN_OR_RETURN(Value obj, Eval(*callee.args[0]));
      if (obj.is_undefined())
        return ErrorAt(e.loc, absl::StrCat("'", Spell(*callee.args[0]), "' is undefined (calling ",
                                           callee.name, "() on it)"));
      RETURN_IF_ERROR(EvalArgs(e, args, kwargs));
      absl::StatusOr<Value> r = CallMethod(obj, callee.name, args, kwargs, budget_);
      if (r.ok()) return r;
      if (!absl::IsNotFound(r.status())) return Located(e.loc, r.status());
      const Value member = GetAttr(obj, callee.name);
      if (member.is_macro()) return CallMacro(e, *member.macro(), args, kwargs);
      return ErrorAt(e.loc, absl::StrCat("unsupported method '", callee.name, "' on ",
                                         TypeName(obj)));
    }
    if (callee.kind == Expr::Kind::kName) {
      const Value* bound = Lookup(callee.name);
      RETURN_IF_ERROR(EvalArgs(e, args, kwargs));
      if (bound != nullptr) {
        if (!bound->is_macro())
          return ErrorAt(e.loc, absl::StrCat("'", callee.name, "' is not callable"));
        const Stmt* macro = bound->macro();
        return CallMacro(e, *macro, args, kwargs);
      }
      return CallGlobal(e, callee.name, args, kwargs);
    }
    ASSIGN_OR_RETURN(Value fn, Eval(callee));
    if (!fn.is_macro()) return ErrorAt(e.loc, absl::StrCat("'", TypeName(fn), "' is not callable"));
    RETURN_IF_ERROR(EvalArgs(e, args, kwargs));
    return CallMacro(e, *fn.macro(), args, kwargs);
  }

  absl::StatusOr<Value> CallMacro(const Expr& e, const Stmt& macro, const Args& args,
                                  const Kwargs& kwargs) {
    if (args.size() > macro.params.size())
      return ErrorAt(e.loc, absl::StrCat("macro '", macro.name, "' takes ", macro.params.size(),
                                         " arguments, got ", args.size()));
    Frame frame;
    for (size_t i = 0; i < args.size(); ++i) frame[macro.params[i]] = args[i];
    for (const auto& [k, v] : kwargs) {
      if (std::find(macro.params.begin(), macro.params.end(), k) == macro.params.end())
        return ErrorAt(e.loc, absl::StrCat("macro '", macro.name, "' has no parameter '", k, "'"));
      if (frame.contains(k))
        return ErrorAt(e.loc, absl::StrCat("macro '", macro.name, "' got '", k, "' twice"));
      frame[k] = v;
    }
    const size_t saved_base = base_;
    frames_.push_back(std::move(frame));
    base_ = frames_.size() - 1;
    struct Restore {
      Evaluator* self;
      size_t base;
      ~Restore() {
        self->frames_.pop_back();
        self->base_ = base;
      }
    } restore{this, saved_base};
    for (size_t i = 0; i < macro.params.size(); ++i) {
      if (frames_.back().contains(macro.params[i])) continue;
      Value v;
      if (macro.defaults[i] != nullptr) {
        ASSIGN_OR_RETURN(v, Eval(*macro.defaults[i]));
      }
      frames_.back()[macro.params[i]] = std::move(v);
    }
    std::string out;
    ASSIGN_OR_RETURN(Flow flow, ExecBody(macro.body, out));
    (void)flow;
    return Value::String(std::move(out));
  }

  absl::StatusOr<Value> CallGlobal(const Expr& e, const std::string& name, const Args& args,
                                   const Kwargs& kwargs) {
    if (name == "raise_exception") {
      const std::string msg = args.empty() ? "raise_exception() called" : ToDisplayString(args[0]);
      return absl::InvalidArgumentError(msg);
    }
    if (name == "namespace" || name == "dict") {
      if (!args.empty())
        return ErrorAt(e.loc, absl::StrCat(name, "() takes keyword arguments only"));
      if (name == "dict") {
        std::vector<std::pair<std::string, Value>> items(kwargs.begin(), kwargs.end());
        Value d = Value::Dict(std::move(items));
        if (d.Depth() > kMaxValueDepth) return ErrorAt(e.loc, "dict nested too deep");
        return d;
      }
      auto ns = std::make_shared<NamespaceData>();
      for (const auto& [k, v] : kwargs) {
        if (v.HasNamespace())
          return ErrorAt(e.loc, "a namespace attribute cannot hold a namespace");
        ns->Set(k, v);
      }
      return Value::Namespace(std::move(ns));
    }
    if (name == "range") {
      if (args.empty() || args.size() > 3 || !kwargs.empty())
        return ErrorAt(e.loc, "range() takes 1 to 3 integer arguments");
      for (const Value& a : args)
        if (!a.is_int() && !a.is_bool())
          return ErrorAt(e.loc, absl::StrCat("range() arguments must be integers, not ",
                                             TypeName(a)));
      int64_t start = 0, stop = 0, step = 1;
      if (args.size() == 1) {
        stop = args[0].as_int();
      } else {
        start = args[0].as_int();
        stop = args[1].as_int();
        if (args.size() == 3) step = args[2].as_int();
      }
      if (step == 0) return ErrorAt(e.loc, "range() step must not be zero");
      // Element count without overflow (long double holds int64 spans).
      const long double span = static_cast<long double>(stop) - static_cast<long double>(start);
      const long double count_ld = std::ceil(span / static_cast<long double>(step));
      const int64_t count = count_ld <= 0 ? 0 : count_ld > 1e15L ? INT64_C(1000000000000000)
                                                                 : static_cast<int64_t>(count_ld);
      const int64_t max_items = limits_.max_bytes / static_cast<int64_t>(sizeof(Value));
      if (count > max_items)
        return ErrorAt(e.loc, absl::StrCat("range() of ", count, " items is too long"));
      std::vector<Value> items;
      items.reserve(static_cast<size_t>(count));
      for (int64_t i = 0; i < count; ++i) {
        // In range by construction; unsigned arithmetic avoids overflow in i * step.
        items.push_back(Value::Int(static_cast<int64_t>(
            static_cast<uint64_t>(start) + static_cast<uint64_t>(i) * static_cast<uint64_t>(step))));
      }
      return MakeList(e.loc, std::move(items));
    }
    if (name == "strftime_now") {
      if (args.size() != 1 || !args[0].is_string())
        return ErrorAt(e.loc, "strftime_now() takes a format string");
      const std::time_t now = std::time(nullptr);
      std::tm tm{};
      localtime_r(&now, &tm);
      char buf[256];
      const size_t n = std::strftime(buf, sizeof(buf), args[0].str().c_str(), &tm);
      return Value::String(std::string(buf, n));
    }
    return ErrorAt(e.loc, absl::StrCat("unsupported function '", name, "'"));
  }

  const RenderLimits limits_;
  Budget budget_;
  std::vector<Frame> frames_;  // [0]: globals and top-level sets
  size_t base_ = 0;            // first frame of the current macro call
  int depth_ = 0;
  int64_t steps_ = 0;
};

}  // namespace

absl::StatusOr<std::string> Render(const Program& program,
                                   std::vector<std::pair<std::string, Value>> globals,
                                   const RenderLimits& limits) {
  Evaluator evaluator(std::move(globals), limits);
  return evaluator.Run(program);
}

}  // namespace moe::jinja
