list(APPEND MOE_TEXT_SOURCES tokenizer.cc)
