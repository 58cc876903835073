"""``python -m rlhf_gym.embedded``: builds the embedded default (:mod:`rlhf_gym.embedded.build`)."""

from __future__ import annotations

from rlhf_gym.embedded import build

if __name__ == "__main__":
    raise SystemExit(build.main())
