"""Detection rules: pure functions over (event, context), registered in `registry`."""
