"""The training loop and what it stands on: evaluation, checkpoint state, runtime, distributed set-up, token data."""
