"""mindr1.models."""
