# Tests of the model generator and moe-mkmodel.
moe_test(generator_test generator_test.cc)
# The moe-mkmodel tests run the real binary.
add_dependencies(generator_test moe-mkmodel)
target_compile_definitions(generator_test PRIVATE
  MOE_MKMODEL_BIN="$<TARGET_FILE:moe-mkmodel>")
