# Unit tests of core/ (owned by the unit-test work; one moe_test per file).
moe_test(dtype_test dtype_test.cc)
moe_test(model_config_test model_config_test.cc)
moe_test(safetensors_test safetensors_test.cc)
moe_test(checkpoint_test checkpoint_test.cc)
moe_test(kv_cache_test kv_cache_test.cc)
moe_test(sampling_test sampling_test.cc)
moe_test(kernels_test kernels_test.cc)
moe_test(attention_test attention_test.cc)
