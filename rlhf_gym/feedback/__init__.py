"""The feedback half of RLHF: people's (or a simulated person's) comparisons → a reward model.

* :mod:`.records`: the preference format and readers (ours, HH-RLHF, best-of-k).
* :mod:`.simulate`: pairs sampled from a policy, labeled by a task's gold labeler.
* :mod:`.trainer`: Bradley-Terry reward-model training (hard, margin and soft labels).
* :mod:`.metrics`: pairwise accuracy, calibration, agreement (Cohen's kappa).
* :mod:`.label`: the labeling page (``rlhf-gym label``) and its SQLite store.

Layering (``docs/design.md``): this package may import :mod:`rlhf_gym.envs` (model loading,
gold labelers), never the reverse; the embedded-default build trains its reward models here.
"""
