"""thaw builder service."""
