"""Constitutional AI: feedback from a model that follows written principles.

``constitution`` (the principles, a TOML file), ``formats`` (the text formats of critique,
revision and comparison prompts), ``generate`` (the prompted model), ``revise`` (SL-CAI data:
``rlhf-gym cai revise``), ``label`` (RL-CAI data: ``rlhf-gym cai label``), ``cli``. Like
:mod:`rlhf_gym.feedback`, this package imports ``envs`` and never the reverse
(``docs/design.md``, "Layering"); ``docs/cai.md`` walks through the pipeline.
"""
