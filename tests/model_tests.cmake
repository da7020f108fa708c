# Model-level tests: fixtures, family semantics, generation.
