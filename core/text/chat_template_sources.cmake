# The Jinja chat-template engine (core/text/chat_template.h): lexer, parser,
# values, builtins (filters, tests, methods), string operations and
# evaluator.
list(APPEND MOE_TEXT_SOURCES
  chat_template.cc
  jinja_builtins.cc
  jinja_eval.cc
  jinja_lexer.cc
  jinja_parser.cc
  jinja_strings.cc
  jinja_value.cc)
