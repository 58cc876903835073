"""The RLHF environments and the scoring code they use (never imports agents)."""
