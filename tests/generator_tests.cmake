# Tests of the model generator and moe-mkmodel.
