"""mindr1.parallel."""
