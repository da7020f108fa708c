list(APPEND MOE_TEXT_SOURCES chat_template.cc)
