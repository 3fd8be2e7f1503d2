"""mindr1.rollout."""
