"""mindr1.checkpoint."""
