"""mindr1.eval."""
