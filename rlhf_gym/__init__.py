"""rlhf-gym: RLHF as an ordinary Gymnasium problem."""

__version__ = "0.1.0"
