"""The fraud team's own online learner, run by tideline (see model.py)."""
