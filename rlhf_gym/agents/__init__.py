"""Agents that act in the rlhf-gym environments through their public API."""
