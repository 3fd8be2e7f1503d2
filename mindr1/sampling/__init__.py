"""mindr1.sampling."""
