"""The pipeline that builds the embedded default.

The embedded default is what ``gym.make("RLHF-v0")`` runs offline: a tiny causal LM with its
tokenizer, one reward model per task and the train/eval prompt files, shipped in Hugging Face
format in ``rlhf_gym/data/default``. It is built from nothing but the project's own seeded
synthetic corpus (:mod:`rlhf_gym.embedded.corpus`) by :mod:`rlhf_gym.embedded.build`; see
``docs/design.md``, "The embedded default".

This subpackage is only used to (re)build those files (``python -m rlhf_gym.embedded``); the
environment never imports it and only reads the built files. Importing it imports nothing
(in particular not torch): the submodules are imported explicitly.
"""
