"""mindr1.rl.rewards."""
