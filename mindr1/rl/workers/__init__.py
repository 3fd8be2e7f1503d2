"""mindr1.rl.workers."""
