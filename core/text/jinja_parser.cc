#include "core/text/jinja_parser.h"

#include <algorithm>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/status_macros.h"
#include "core/text/jinja_builtins.h"
#include "core/text/jinja_lexer.h"

namespace moe::jinja {
namespace {

using ExprPtr = std::unique_ptr<Expr>;

ExprPtr MakeExpr(Expr::Kind kind, Location loc) {
  auto e = std::make_unique<Expr>();
  e->kind = kind;
  e->loc = loc;
  return e;
}

class Parser {
 public:
  explicit Parser(std::vector<Token> tokens) : toks_(std::move(tokens)) {}

  absl::StatusOr<std::shared_ptr<const Program>> Run() {
    auto program = std::make_shared<Program>();
    ASSIGN_OR_RETURN(program->body, ParseBody({}, "", Location{}));
    return std::shared_ptr<const Program>(std::move(program));
  }

 private:
  // ---- token helpers ----
  const Token& Peek(size_t ahead = 0) const {
    const size_t i = pos_ + ahead;
    return i < toks_.size() ? toks_[i] : toks_.back();
  }
  const Token& Next() {
    const Token& t = Peek();
    if (pos_ + 1 < toks_.size()) ++pos_;
    return t;
  }
  bool IsOp(absl::string_view op, size_t ahead = 0) const {
    return Peek(ahead).kind == Tok::kOp && Peek(ahead).text == op;
  }
  bool IsName(absl::string_view name, size_t ahead = 0) const {
    return Peek(ahead).kind == Tok::kName && Peek(ahead).text == name;
  }
  static std::string Describe(const Token& t) {
    switch (t.kind) {
      case Tok::kEof: return "end of template";
      case Tok::kVarEnd: return "end of '{{ }}'";
      case Tok::kBlockEnd: return "end of tag";
      case Tok::kText: return "template text";
      case Tok::kVarBegin: return "'{{'";
      case Tok::kBlockBegin: return "'{%'";
      case Tok::kString: return "string literal";
      default: return absl::StrCat("'", t.text, "'");
    }
  }
  absl::Status Unexpected(absl::string_view expected) const {
    return ErrorAt(Peek().loc, absl::StrCat("unexpected ", Describe(Peek()),
                                            expected.empty() ? "" : ", expected ", expected));
  }
  absl::Status ExpectOp(absl::string_view op) {
    if (!IsOp(op)) return Unexpected(absl::StrCat("'", op, "'"));
    Next();
    return absl::OkStatus();
  }
  absl::StatusOr<std::string> ExpectName() {
    if (Peek().kind != Tok::kName) return Unexpected("a name");
    return Next().text;
  }
  absl::Status ExpectBlockEnd() {
    if (Peek().kind != Tok::kBlockEnd) return Unexpected("'%}'");
    Next();
    return absl::OkStatus();
  }

  // ---- depth bound ----
  absl::Status Enter(Location at) {
    if (++depth_ > kMaxParseDepth) {
      --depth_;
      return ErrorAt(at, absl::StrCat("template nested too deeply (more than ",
                                      kMaxParseDepth, " levels)"));
    }
    return absl::OkStatus();
  }
  struct Exit {
    int* depth;
    ~Exit() { --*depth; }
  };
  // Left-deep chains (a + b + c, x.a.b, x|f|g) deepen the tree one level a
  // link: each link counts against kMaxParseDepth until the chain ends.
  struct ChainExit {
    int* depth;
    int links = 0;
    ~ChainExit() { *depth -= links; }
  };
  absl::Status Link(ChainExit& chain, Location at) {
    RETURN_IF_ERROR(Enter(at));
    ++chain.links;
    return absl::OkStatus();
  }

  // ---- statements ----

  // Parses until one of `end_tags` (consumed with its name; the rest of that
  // tag is left to the caller, which reads the name from *end) or, when
  // `end_tags` is empty, the end of the template.
  absl::StatusOr<Body> ParseBody(const std::vector<std::string>& end_tags,
                                 absl::string_view opener, Location open_loc,
                                 std::string* end = nullptr) {
    RETURN_IF_ERROR(Enter(Peek().loc));
    Exit exit{&depth_};
    Body body;
    while (true) {
      const Token& t = Peek();
      if (t.kind == Tok::kEof) {
        if (end_tags.empty()) return body;
        return ErrorAt(open_loc, absl::StrCat("'", opener, "' block is never closed (expected '",
                                              absl::StrJoin(end_tags, "' or '"), "')"));
      }
      if (t.kind == Tok::kText) {
        auto s = std::make_unique<Stmt>();
        s->kind = Stmt::Kind::kText;
        s->loc = t.loc;
        s->text = t.text;
        body.push_back(std::move(s));
        Next();
        continue;
      }
      if (t.kind == Tok::kVarBegin) {
        auto s = std::make_unique<Stmt>();
        s->kind = Stmt::Kind::kOutput;
        s->loc = t.loc;
        Next();
        ASSIGN_OR_RETURN(s->expr, ParseExpression());
        if (Peek().kind != Tok::kVarEnd) return Unexpected("'}}'");
        Next();
        body.push_back(std::move(s));
        continue;
      }
      if (t.kind != Tok::kBlockBegin) return Unexpected("");
      const Location tag_loc = t.loc;
      Next();
      if (Peek().kind != Tok::kName) return Unexpected("a tag name");
      const std::string name = Next().text;
      for (const std::string& e : end_tags) {
        if (name == e) {
          if (end != nullptr) *end = name;
          return body;
        }
      }
      if (name == "if") {
        ASSIGN_OR_RETURN(auto s, ParseIf(tag_loc));
        body.push_back(std::move(s));
      } else if (name == "for") {
        ASSIGN_OR_RETURN(auto s, ParseFor(tag_loc));
        body.push_back(std::move(s));
      } else if (name == "set") {
        ASSIGN_OR_RETURN(auto s, ParseSet(tag_loc));
        body.push_back(std::move(s));
      } else if (name == "macro") {
        ASSIGN_OR_RETURN(auto s, ParseMacro(tag_loc));
        body.push_back(std::move(s));
      } else if (name == "break" || name == "continue") {
        if (loop_depth_ == 0)
          return ErrorAt(tag_loc, absl::StrCat("'", name, "' outside a for loop"));
        RETURN_IF_ERROR(ExpectBlockEnd());
        auto s = std::make_unique<Stmt>();
        s->kind = name == "break" ? Stmt::Kind::kBreak : Stmt::Kind::kContinue;
        s->loc = tag_loc;
        body.push_back(std::move(s));
      } else if (name == "generation") {
        // transformers' {% generation %} marks assistant text; it renders
        // its body unchanged.
        RETURN_IF_ERROR(ExpectBlockEnd());
        ASSIGN_OR_RETURN(Body inner, ParseBody({"endgeneration"}, "generation", tag_loc));
        RETURN_IF_ERROR(ExpectBlockEnd());
        for (auto& s : inner) body.push_back(std::move(s));
      } else if (name == "elif" || name == "else" || name.rfind("end", 0) == 0) {
        return ErrorAt(tag_loc, absl::StrCat("unexpected tag '", name, "'"));
      } else {
        return ErrorAt(tag_loc, absl::StrCat("unsupported tag '", name, "'"));
      }
    }
  }

  absl::StatusOr<std::unique_ptr<Stmt>> ParseIf(Location loc) {
    auto s = std::make_unique<Stmt>();
    s->kind = Stmt::Kind::kIf;
    s->loc = loc;
    ASSIGN_OR_RETURN(ExprPtr cond, ParseExpression());
    while (true) {
      RETURN_IF_ERROR(ExpectBlockEnd());
      std::string end;
      ASSIGN_OR_RETURN(Body body, ParseBody({"elif", "else", "endif"}, "if", loc, &end));
      s->branches.emplace_back(std::move(cond), std::move(body));
      if (end == "elif") {
        ASSIGN_OR_RETURN(cond, ParseExpression());
        continue;
      }
      if (end == "else") {
        RETURN_IF_ERROR(ExpectBlockEnd());
        ASSIGN_OR_RETURN(Body else_body, ParseBody({"endif"}, "if", loc));
        s->branches.emplace_back(nullptr, std::move(else_body));
      }
      RETURN_IF_ERROR(ExpectBlockEnd());
      return s;
    }
  }

  absl::StatusOr<std::unique_ptr<Stmt>> ParseFor(Location loc) {
    auto s = std::make_unique<Stmt>();
    s->kind = Stmt::Kind::kFor;
    s->loc = loc;
    const bool paren = IsOp("(");
    if (paren) Next();
    while (true) {
      ASSIGN_OR_RETURN(std::string target, ExpectName());
      s->targets.push_back(std::move(target));
      if (!IsOp(",")) break;
      Next();
    }
    if (paren) RETURN_IF_ERROR(ExpectOp(")"));
    if (!IsName("in")) return Unexpected("'in'");
    Next();
    ASSIGN_OR_RETURN(s->expr, ParseOr());
    if (IsName("if")) {
      Next();
      ASSIGN_OR_RETURN(s->cond, ParseExpression());
    }
    if (IsName("recursive"))
      return ErrorAt(Peek().loc, "unsupported loop modifier 'recursive'");
    RETURN_IF_ERROR(ExpectBlockEnd());
    ++loop_depth_;
    std::string end;
    absl::StatusOr<Body> body = ParseBody({"else", "endfor"}, "for", loc, &end);
    --loop_depth_;
    if (!body.ok()) return body.status();
    s->body = *std::move(body);
    if (end == "else") {
      RETURN_IF_ERROR(ExpectBlockEnd());
      ASSIGN_OR_RETURN(s->else_body, ParseBody({"endfor"}, "for", loc));
    }
    RETURN_IF_ERROR(ExpectBlockEnd());
    return s;
  }

  absl::StatusOr<std::unique_ptr<Stmt>> ParseSet(Location loc) {
    auto s = std::make_unique<Stmt>();
    s->kind = Stmt::Kind::kSet;
    s->loc = loc;
    ASSIGN_OR_RETURN(std::string first, ExpectName());
    s->targets.push_back(std::move(first));
    if (IsOp(".")) {
      Next();
      ASSIGN_OR_RETURN(s->attr, ExpectName());
    } else {
      while (IsOp(",")) {
        Next();
        ASSIGN_OR_RETURN(std::string more, ExpectName());
        s->targets.push_back(std::move(more));
      }
    }
    if (Peek().kind == Tok::kBlockEnd && s->attr.empty() && s->targets.size() == 1) {
      Next();
      s->kind = Stmt::Kind::kSetBlock;
      ASSIGN_OR_RETURN(s->body, ParseBody({"endset"}, "set", loc));
      RETURN_IF_ERROR(ExpectBlockEnd());
      return s;
    }
    if (IsOp("|")) return ErrorAt(Peek().loc, "unsupported filter on a set block");
    RETURN_IF_ERROR(ExpectOp("="));
    ASSIGN_OR_RETURN(s->expr, ParseTupleOrExpression());
    RETURN_IF_ERROR(ExpectBlockEnd());
    return s;
  }

  absl::StatusOr<std::unique_ptr<Stmt>> ParseMacro(Location loc) {
    auto s = std::make_unique<Stmt>();
    s->kind = Stmt::Kind::kMacro;
    s->loc = loc;
    ASSIGN_OR_RETURN(s->name, ExpectName());
    RETURN_IF_ERROR(ExpectOp("("));
    while (!IsOp(")")) {
      ASSIGN_OR_RETURN(std::string param, ExpectName());
      ExprPtr def;
      if (IsOp("=")) {
        Next();
        ASSIGN_OR_RETURN(def, ParseExpression());
      }
      s->params.push_back(std::move(param));
      s->defaults.push_back(std::move(def));
      if (!IsOp(",")) break;
      Next();
    }
    RETURN_IF_ERROR(ExpectOp(")"));
    RETURN_IF_ERROR(ExpectBlockEnd());
    const int saved_loops = loop_depth_;
    loop_depth_ = 0;
    absl::StatusOr<Body> body = ParseBody({"endmacro"}, "macro", loc);
    loop_depth_ = saved_loops;
    if (!body.ok()) return body.status();
    s->body = *std::move(body);
    if (Peek().kind == Tok::kName) Next();  // {% endmacro name %}
    RETURN_IF_ERROR(ExpectBlockEnd());
    return s;
  }

  // ---- expressions ----

  // `a, b` (a tuple without parentheses) or a single expression.
  absl::StatusOr<ExprPtr> ParseTupleOrExpression() {
    const Location loc = Peek().loc;
    ASSIGN_OR_RETURN(ExprPtr first, ParseExpression());
    if (!IsOp(",")) return first;
    ExprPtr tuple = MakeExpr(Expr::Kind::kTuple, loc);
    tuple->args.push_back(std::move(first));
    while (IsOp(",")) {
      Next();
      ASSIGN_OR_RETURN(ExprPtr item, ParseExpression());
      tuple->args.push_back(std::move(item));
    }
    return tuple;
  }

  absl::StatusOr<ExprPtr> ParseExpression() {
    const Location loc = Peek().loc;
    RETURN_IF_ERROR(Enter(loc));
    Exit exit{&depth_};
    ASSIGN_OR_RETURN(ExprPtr then, ParseOr());
    if (!IsName("if")) return then;
    Next();
    ExprPtr cond = MakeExpr(Expr::Kind::kCond, loc);
    ASSIGN_OR_RETURN(ExprPtr test, ParseOr());
    ExprPtr otherwise;
    if (IsName("else")) {
      Next();
      ASSIGN_OR_RETURN(otherwise, ParseExpression());
    }
    cond->args.push_back(std::move(then));
    cond->args.push_back(std::move(test));
    cond->args.push_back(std::move(otherwise));
    return cond;
  }

  absl::StatusOr<ExprPtr> ParseOr() {
    ASSIGN_OR_RETURN(ExprPtr left, ParseAnd());
    ChainExit chain{&depth_};
    while (IsName("or")) {
      RETURN_IF_ERROR(Link(chain, Peek().loc));
      ExprPtr e = MakeExpr(Expr::Kind::kOr, Next().loc);
      ASSIGN_OR_RETURN(ExprPtr right, ParseAnd());
      e->args.push_back(std::move(left));
      e->args.push_back(std::move(right));
      left = std::move(e);
    }
    return left;
  }

  absl::StatusOr<ExprPtr> ParseAnd() {
    ASSIGN_OR_RETURN(ExprPtr left, ParseNot());
    ChainExit chain{&depth_};
    while (IsName("and")) {
      RETURN_IF_ERROR(Link(chain, Peek().loc));
      ExprPtr e = MakeExpr(Expr::Kind::kAnd, Next().loc);
      ASSIGN_OR_RETURN(ExprPtr right, ParseNot());
      e->args.push_back(std::move(left));
      e->args.push_back(std::move(right));
      left = std::move(e);
    }
    return left;
  }

  absl::StatusOr<ExprPtr> ParseNot() {
    if (!IsName("not")) return ParseCompare();
    const Location loc = Next().loc;
    RETURN_IF_ERROR(Enter(loc));
    Exit exit{&depth_};
    ExprPtr e = MakeExpr(Expr::Kind::kNot, loc);
    ASSIGN_OR_RETURN(ExprPtr inner, ParseNot());
    e->args.push_back(std::move(inner));
    return e;
  }

  absl::StatusOr<ExprPtr> ParseCompare() {
    const Location loc = Peek().loc;
    ASSIGN_OR_RETURN(ExprPtr first, ParseMath1());
    ExprPtr cmp;
    while (true) {
      std::string op;
      if (Peek().kind == Tok::kOp &&
          (Peek().text == "==" || Peek().text == "!=" || Peek().text == "<" ||
           Peek().text == "<=" || Peek().text == ">" || Peek().text == ">=")) {
        op = Next().text;
      } else if (IsName("in")) {
        Next();
        op = "in";
      } else if (IsName("not") && IsName("in", 1)) {
        Next();
        Next();
        op = "not in";
      } else {
        break;
      }
      if (cmp == nullptr) {
        cmp = MakeExpr(Expr::Kind::kCompare, loc);
        cmp->args.push_back(std::move(first));
      }
      ASSIGN_OR_RETURN(ExprPtr right, ParseMath1());
      cmp->ops.push_back(std::move(op));
      cmp->args.push_back(std::move(right));
    }
    return cmp != nullptr ? std::move(cmp) : std::move(first);
  }

  // Left-associative binary levels, loosest first: + -, ~, * / // %, **.
  absl::StatusOr<ExprPtr> ParseMath1() { return ParseBinary(0); }

  absl::StatusOr<ExprPtr> ParseBinary(int level) {
    static const std::vector<std::vector<std::string>> kLevels = {
        {"+", "-"}, {"~"}, {"*", "/", "//", "%"}, {"**"}};
    if (level == static_cast<int>(kLevels.size())) return ParseUnary(true);
    ASSIGN_OR_RETURN(ExprPtr left, ParseBinary(level + 1));
    ChainExit chain{&depth_};
    while (Peek().kind == Tok::kOp) {
      const std::vector<std::string>& ops = kLevels[static_cast<size_t>(level)];
      if (std::find(ops.begin(), ops.end(), Peek().text) == ops.end()) break;
      RETURN_IF_ERROR(Link(chain, Peek().loc));
      ExprPtr e = MakeExpr(Expr::Kind::kBinary, Peek().loc);
      e->name = Next().text;
      ASSIGN_OR_RETURN(ExprPtr right, ParseBinary(level + 1));
      e->args.push_back(std::move(left));
      e->args.push_back(std::move(right));
      left = std::move(e);
    }
    return left;
  }

  absl::StatusOr<ExprPtr> ParseUnary(bool with_filter) {
    const Location loc = Peek().loc;
    RETURN_IF_ERROR(Enter(loc));
    Exit exit{&depth_};
    ExprPtr node;
    if (IsOp("-") || IsOp("+")) {
      node = MakeExpr(Expr::Kind::kUnary, loc);
      node->name = Next().text;
      ASSIGN_OR_RETURN(ExprPtr inner, ParseUnary(false));
      node->args.push_back(std::move(inner));
    } else {
      ASSIGN_OR_RETURN(node, ParsePrimary());
      ASSIGN_OR_RETURN(node, ParsePostfix(std::move(node)));
    }
    if (!with_filter) return node;
    ChainExit chain{&depth_};
    while (true) {
      RETURN_IF_ERROR(Link(chain, Peek().loc));
      if (IsOp("|")) {
        ASSIGN_OR_RETURN(node, ParseFilter(std::move(node)));
      } else if (IsName("is")) {
        ASSIGN_OR_RETURN(node, ParseTest(std::move(node)));
      } else if (IsOp("(") || IsOp(".") || IsOp("[")) {
        ASSIGN_OR_RETURN(node, ParsePostfix(std::move(node)));
      } else {
        return node;
      }
    }
  }

  absl::StatusOr<ExprPtr> ParseFilter(ExprPtr subject) {
    Next();  // '|'
    const Location loc = Peek().loc;
    ASSIGN_OR_RETURN(std::string name, ExpectName());
    if (!IsKnownFilter(name))
      return ErrorAt(loc, absl::StrCat("unsupported filter '", name, "'"));
    ExprPtr e = MakeExpr(Expr::Kind::kFilter, loc);
    e->name = std::move(name);
    e->args.push_back(std::move(subject));
    if (IsOp("(")) {
      Next();
      RETURN_IF_ERROR(ParseCallArgs(*e));
    }
    return e;
  }

  absl::StatusOr<ExprPtr> ParseTest(ExprPtr subject) {
    Next();  // 'is'
    bool negated = false;
    if (IsName("not")) {
      Next();
      negated = true;
    }
    const Location loc = Peek().loc;
    ASSIGN_OR_RETURN(std::string name, ExpectName());
    if (!IsKnownTest(name))
      return ErrorAt(loc, absl::StrCat("unsupported test '", name, "'"));
    ExprPtr e = MakeExpr(Expr::Kind::kTest, loc);
    e->name = std::move(name);
    e->negated = negated;
    e->args.push_back(std::move(subject));
    if (IsOp("(")) {
      Next();
      RETURN_IF_ERROR(ParseCallArgs(*e));
      if (!e->kwargs.empty()) return ErrorAt(loc, "tests take no keyword arguments");
    } else {
      // One argument without parentheses: `is divisibleby 3`.
      const Token& t = Peek();
      const bool starts_primary =
          t.kind == Tok::kString || t.kind == Tok::kInt || t.kind == Tok::kFloat ||
          (t.kind == Tok::kOp && (t.text == "[" || t.text == "{")) ||
          (t.kind == Tok::kName && t.text != "else" && t.text != "or" && t.text != "and" &&
           t.text != "if" && t.text != "in" && t.text != "not" && t.text != "is");
      if (starts_primary) {
        ASSIGN_OR_RETURN(ExprPtr arg, ParsePrimary());
        ASSIGN_OR_RETURN(arg, ParsePostfix(std::move(arg)));
        e->args.push_back(std::move(arg));
      }
    }
    return e;
  }

  // Arguments after '(' up to and including ')'; appended to e.args/kwargs.
  absl::Status ParseCallArgs(Expr& e) {
    while (!IsOp(")")) {
      if (IsOp("*") || IsOp("**")) return ErrorAt(Peek().loc, "unsupported *args / **kwargs");
      if (Peek().kind == Tok::kName && IsOp("=", 1)) {
        std::string key = Next().text;
        Next();
        ASSIGN_OR_RETURN(ExprPtr value, ParseExpression());
        e.kwargs.emplace_back(std::move(key), std::move(value));
      } else {
        if (!e.kwargs.empty())
          return ErrorAt(Peek().loc, "positional argument after keyword argument");
        ASSIGN_OR_RETURN(ExprPtr value, ParseExpression());
        e.args.push_back(std::move(value));
      }
      if (!IsOp(",")) break;
      Next();
    }
    return ExpectOp(")");
  }

  absl::StatusOr<ExprPtr> ParsePostfix(ExprPtr node) {
    ChainExit chain{&depth_};
    while (true) {
      RETURN_IF_ERROR(Link(chain, Peek().loc));
      if (IsOp(".")) {
        const Location loc = Next().loc;
        if (Peek().kind == Tok::kInt) {  // x.0 is x[0]
          ExprPtr e = MakeExpr(Expr::Kind::kSubscript, loc);
          ASSIGN_OR_RETURN(ExprPtr index, ParsePrimary());
          e->args.push_back(std::move(node));
          e->args.push_back(std::move(index));
          node = std::move(e);
          continue;
        }
        ExprPtr e = MakeExpr(Expr::Kind::kAttr, loc);
        ASSIGN_OR_RETURN(e->name, ExpectName());
        e->args.push_back(std::move(node));
        node = std::move(e);
      } else if (IsOp("[")) {
        const Location loc = Next().loc;
        ExprPtr start;
        if (!IsOp(":")) {
          ASSIGN_OR_RETURN(start, ParseExpression());
        }
        if (IsOp("]")) {
          if (start == nullptr) return Unexpected("an index");
          Next();
          ExprPtr e = MakeExpr(Expr::Kind::kSubscript, loc);
          e->args.push_back(std::move(node));
          e->args.push_back(std::move(start));
          node = std::move(e);
          continue;
        }
        if (IsOp(",")) return ErrorAt(Peek().loc, "unsupported tuple subscript");
        RETURN_IF_ERROR(ExpectOp(":"));
        ExprPtr stop, step;
        if (!IsOp(":") && !IsOp("]")) {
          ASSIGN_OR_RETURN(stop, ParseExpression());
        }
        if (IsOp(":")) {
          Next();
          if (!IsOp("]")) {
            ASSIGN_OR_RETURN(step, ParseExpression());
          }
        }
        RETURN_IF_ERROR(ExpectOp("]"));
        ExprPtr e = MakeExpr(Expr::Kind::kSlice, loc);
        e->args.push_back(std::move(node));
        e->args.push_back(std::move(start));
        e->args.push_back(std::move(stop));
        e->args.push_back(std::move(step));
        node = std::move(e);
      } else if (IsOp("(")) {
        ExprPtr e = MakeExpr(Expr::Kind::kCall, Next().loc);
        e->args.push_back(std::move(node));
        RETURN_IF_ERROR(ParseCallArgs(*e));
        node = std::move(e);
      } else {
        return node;
      }
    }
  }

  absl::StatusOr<ExprPtr> ParsePrimary() {
    const Token& t = Peek();
    const Location loc = t.loc;
    switch (t.kind) {
      case Tok::kName: {
        const std::string name = Next().text;
        ExprPtr e = MakeExpr(Expr::Kind::kLiteral, loc);
        if (name == "true" || name == "True") {
          e->literal = Value::Bool(true);
        } else if (name == "false" || name == "False") {
          e->literal = Value::Bool(false);
        } else if (name == "none" || name == "None") {
          e->literal = Value::None();
        } else {
          e->kind = Expr::Kind::kName;
          e->name = name;
        }
        return e;
      }
      case Tok::kString: {
        std::string s;
        while (Peek().kind == Tok::kString) s += Next().text;
        ExprPtr e = MakeExpr(Expr::Kind::kLiteral, loc);
        e->literal = Value::String(std::move(s));
        return e;
      }
      case Tok::kInt: {
        int64_t i = 0;
        if (!absl::SimpleAtoi(t.text, &i))
          return ErrorAt(loc, absl::StrCat("integer literal out of range: ", t.text));
        Next();
        ExprPtr e = MakeExpr(Expr::Kind::kLiteral, loc);
        e->literal = Value::Int(i);
        return e;
      }
      case Tok::kFloat: {
        double f = 0;
        if (!absl::SimpleAtod(t.text, &f))
          return ErrorAt(loc, absl::StrCat("bad float literal: ", t.text));
        Next();
        ExprPtr e = MakeExpr(Expr::Kind::kLiteral, loc);
        e->literal = Value::Float(f);
        return e;
      }
      case Tok::kOp:
        if (t.text == "(") {
          Next();
          if (IsOp(")")) {
            Next();
            return MakeExpr(Expr::Kind::kTuple, loc);
          }
          ASSIGN_OR_RETURN(ExprPtr inner, ParseExpression());
          if (IsOp(",")) {
            ExprPtr tuple = MakeExpr(Expr::Kind::kTuple, loc);
            tuple->args.push_back(std::move(inner));
            while (IsOp(",")) {
              Next();
              if (IsOp(")")) break;
              ASSIGN_OR_RETURN(ExprPtr item, ParseExpression());
              tuple->args.push_back(std::move(item));
            }
            inner = std::move(tuple);
          }
          RETURN_IF_ERROR(ExpectOp(")"));
          return inner;
        }
        if (t.text == "[") {
          Next();
          ExprPtr list = MakeExpr(Expr::Kind::kList, loc);
          while (!IsOp("]")) {
            ASSIGN_OR_RETURN(ExprPtr item, ParseExpression());
            list->args.push_back(std::move(item));
            if (!IsOp(",")) break;
            Next();
          }
          RETURN_IF_ERROR(ExpectOp("]"));
          return list;
        }
        if (t.text == "{") {
          Next();
          ExprPtr dict = MakeExpr(Expr::Kind::kDict, loc);
          while (!IsOp("}")) {
            ASSIGN_OR_RETURN(ExprPtr key, ParseExpression());
            RETURN_IF_ERROR(ExpectOp(":"));
            ASSIGN_OR_RETURN(ExprPtr value, ParseExpression());
            dict->args.push_back(std::move(key));
            dict->args.push_back(std::move(value));
            if (!IsOp(",")) break;
            Next();
          }
          RETURN_IF_ERROR(ExpectOp("}"));
          return dict;
        }
        return Unexpected("an expression");
      default:
        return Unexpected("an expression");
    }
  }

  std::vector<Token> toks_;
  size_t pos_ = 0;
  int depth_ = 0;
  int loop_depth_ = 0;
};

}  // namespace

absl::StatusOr<std::shared_ptr<const Program>> ParseTemplate(absl::string_view source) {
  // Jinja's keep_trailing_newline=False (transformers' setting): one
  // trailing newline of the source is dropped.
  if (!source.empty() && source.back() == '\n') source.remove_suffix(1);
  if (!source.empty() && source.back() == '\r') source.remove_suffix(1);
  ASSIGN_OR_RETURN(std::vector<Token> tokens, Lex(source));
  return Parser(std::move(tokens)).Run();
}

}  // namespace moe::jinja
