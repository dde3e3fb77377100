"""vlmr."""
