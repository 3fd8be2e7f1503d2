"""mindr1.rl."""
