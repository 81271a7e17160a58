"""The settings tree that composes every component's settings (settings.py), and the training loop
and what it stands on: evaluation, checkpoint state, run folders, token data."""
