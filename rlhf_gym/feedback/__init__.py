"""The feedback half of RLHF: people's (or a simulated person's) comparisons → a reward model.

* :mod:`.records`: the preference format and readers (ours, HH-RLHF, best-of-k).
* :mod:`.simulate`: pairs sampled from a policy, labeled by a task's gold labeler.
* :mod:`.trainer`: Bradley-Terry reward-model training (hard, margin and soft labels).
* :mod:`.metrics`: pairwise accuracy, margin, calibration, agreement with the gold labeler.
* :mod:`.label`: the labeling page (``rlhf-gym label``), its SQLite store and the agreement
  between annotators (Cohen's kappa).

Layering (``docs/design.md``): this package may import :mod:`rlhf_gym.envs` (model loading,
gold labelers), never the reverse; the embedded-default build trains its reward models here.
"""
