"""Score-first test-time training (`ttt=cpu|records`): documents adapt while they are scored (pgolf/ttt/score.py)."""
