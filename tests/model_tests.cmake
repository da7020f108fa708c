# Model-level tests: fixtures, family semantics, generation.
moe_test(reference_model_test reference_model_test.cc)
moe_test(reference_deepseek_test reference_deepseek_test.cc)
moe_test(engine_fixture_test engine_fixture_test.cc)
moe_test(family_semantics_test family_semantics_test.cc)
moe_test(deepseek_family_test deepseek_family_test.cc)
