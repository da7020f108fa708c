# tokenizer tests (owned by the tokenizer work)
