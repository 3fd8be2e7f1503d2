"""mindr1.data."""
