# The tokenizer: Tokenizer::Load and streaming (tokenizer.cc), the
# tokenizer.json pipeline stages, the BPE model, tokenizer_config.json, the
# SentencePiece fallback, PCRE2 and UTF-8 helpers.
list(APPEND MOE_TEXT_SOURCES
  tokenizer.cc hf_tokenizer.cc tokenizer_config.cc bpe_model.cc
  normalizers.cc pre_tokenizers.cc decoders.cc sentencepiece_tokenizer.cc spm_backend.cc
  spm_model.cc
  regex.cc utf8.cc)
