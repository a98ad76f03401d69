"""Campaigns: the search space, Optuna studies across fidelity levels, storage, the leaderboard database."""
