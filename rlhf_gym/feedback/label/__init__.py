"""The labeling page (``rlhf-gym label``): people compare pairs of responses in a browser.

The page shows a prompt and two responses side by side, in a left/right order drawn per pair
from a seeded generator (the order shown is stored with each judgment), and takes a judgment
by mouse or by key: ``1`` left is better, ``2`` right is better, ``3`` tie, ``s`` skip, ``u`` or
Backspace undoes the annotator's last judgment. It asks once for an annotator name (kept in
the browser's localStorage, sent with every judgment), says "saved" only once the server has
committed the judgment, then moves on by itself, and shows progress (judged / total) and the
agreement between annotators (Cohen's kappa where two annotators judged the same pair).

Pairs come from a JSONL file (``--data``) or are sampled once from a policy (``--policy``, or
the task's reference model) when the database is created; a restart on the same ``--db``
reuses them and continues at the first pair the annotator has not judged.

* :mod:`.store`: the SQLite file (WAL, ``synchronous=FULL``, a commit per judgment) and
  :func:`~.store.export` to our preference JSONL (``p_a`` = mean vote of a pair's annotators).
* :mod:`.server`: the Flask app (:func:`~.server.create_app`): the page and its JSON API.
* :mod:`.agreement`: Cohen's kappa, and its mean over pairs of annotators.
* :mod:`.cli`: ``rlhf-gym label`` (serve, or ``--export``).
* ``static/``: the page: ``index.html``, ``label.js``, ``label.css`` (no build, nothing fetched
  from elsewhere).

Safety: the server binds 127.0.0.1 unless ``--host`` names another address *and*
``--allow-remote`` is given (a warning is printed); on loopback it answers only requests whose
``Host`` is a loopback name. Model text is only ever put into the page as text
(``textContent``), never parsed as HTML, and a Content-Security-Policy forbids inline scripts.
Request bodies are validated: a bad one gets 400, an unknown pair id 404, each with a JSON
error message. Usage: ``docs/labeling.md``.
"""
