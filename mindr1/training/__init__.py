"""mindr1.training."""
