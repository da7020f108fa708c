# Unit tests of core/ (owned by the unit-test work; one moe_test per file).
