"""The method contract (`base`, `registry`) and the paper's method, IMC."""
