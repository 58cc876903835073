"""The labeling page's web app: one static page and a small JSON API over a :class:`LabelStore`.

Endpoints (bodies and answers are JSON; ``PAIR`` is ``{"id", "prompt", "left", "right",
"order"}`` with ``order`` ``"ab"`` when response_a is on the left, ``"ba"`` otherwise):

* ``GET /``: the page (``static/index.html``, with ``label.js`` and ``label.css``). Nothing is
  rendered on the server: the script puts model text into the page with ``textContent`` only.
* ``GET /api/next?annotator=NAME`` → ``{"pair": PAIR | null, "judged", "total"}``: the first
  pair NAME has not judged (``null`` when all are).
* ``POST /api/judge`` ``{"pair_id", "annotator", "choice", "order", "seconds"}`` →
  ``{"saved": {"pair_id", "choice"}, "judged", "total"}``. ``choice`` is a screen side
  (``left``, ``right``, ``tie`` or ``skip``), ``order`` the order the page showed; the store
  gets ``a``, ``b``, ``tie`` or ``skip``. The judgment is committed before the answer.
* ``POST /api/undo`` ``{"annotator"}`` → ``{"undone": {"pair_id", "choice"} | null, "pair":
  PAIR | null, "judged", "total"}``: deletes NAME's last judgment; ``pair`` is the undone pair
  (show it again), or the next pair when there was nothing to undo.
* ``GET /api/stats[?annotator=NAME]`` → ``{"total", "judged", "judgments", "annotators",
  "agreement": {"kappa", "annotator_pairs", "shared", "text"}}``.

Errors answer ``{"error": message}``: 400 for a bad body or query (not a JSON object, an
unknown field, a choice or order not allowed, a pair id that is not an integer, an annotator
name that is not 1-64 printable characters, a ``Host`` not allowed), 404 for a pair id that
does not exist. POST bodies must be sent as ``application/json``, which a page on another
site cannot do without the browser asking first (and this app never allows it); the ``Host``
check stops DNS-rebinding pages from reaching a loopback server through a name of their own.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from pathlib import Path
from typing import Any

from flask import Flask, Response, abort, jsonify, request, send_from_directory
from werkzeug.exceptions import HTTPException

from rlhf_gym.feedback.label.store import LabelStore, Pair

STATIC = Path(__file__).parent / "static"
"""The page: ``index.html``, ``label.js``, ``label.css``."""

SIDES = ("left", "right", "tie", "skip")
"""What the page posts as ``choice``."""

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
"""``Host`` names a loopback server answers to."""

MAX_NAME = 64
"""Longest annotator name, in characters."""

_SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def create_app(
    store: LabelStore, *, allowed_hosts: Collection[str] | None = LOOPBACK_HOSTS
) -> Flask:
    """The Flask app serving ``store``.

    Args:
        store: Pairs and judgments.
        allowed_hosts: Host names (without port) the ``Host`` header may carry; ``None``
            accepts any (a server bound to a non-loopback address).
    """
    app = Flask(__name__, static_folder=str(STATIC), static_url_path="/static")
    app.config["MAX_CONTENT_LENGTH"] = 16 * 1024
    app.json.sort_keys = False  # type: ignore[attr-defined]

    @app.before_request
    def check_host() -> None:
        if allowed_hosts is not None and _host_name(request.host) not in allowed_hosts:
            abort(400, f"Host {request.host!r} not allowed: open the page by the server's address")

    @app.after_request
    def security_headers(response: Response) -> Response:
        response.headers.update(_SECURITY_HEADERS)
        return response

    @app.errorhandler(HTTPException)
    def json_error(e: HTTPException) -> tuple[Response, int]:
        return jsonify(error=e.description), e.code or 500

    def progress(annotator: str) -> dict[str, int]:
        return {"judged": store.judged(annotator), "total": store.total()}

    @app.get("/")
    def page() -> Response:
        return send_from_directory(STATIC, "index.html")

    @app.get("/api/next")
    def next_pair() -> Response:
        annotator = _annotator(request.args.get("annotator"))
        return jsonify(pair=_pair_json(store.next_pair(annotator)), **progress(annotator))

    @app.post("/api/judge")
    def judge() -> Response:
        body = _body({"pair_id", "annotator", "choice", "order", "seconds"})
        annotator = _annotator(body.get("annotator"))
        pair_id = body.get("pair_id")
        if not isinstance(pair_id, int) or isinstance(pair_id, bool):
            abort(400, f"pair_id must be an integer; got {pair_id!r}")
        side, order = body.get("choice"), body.get("order")
        if side not in SIDES:
            abort(400, f"choice must be one of {', '.join(SIDES)}; got {side!r}")
        if order not in ("ab", "ba"):
            abort(400, f"order must be 'ab' or 'ba'; got {order!r}")
        seconds = body.get("seconds")
        number = isinstance(seconds, (int, float)) and not isinstance(seconds, bool)
        if seconds is not None and not (number and math.isfinite(seconds) and seconds >= 0):
            abort(400, f"seconds must be a number >= 0 or null; got {seconds!r}")
        choice = _underlying(side, order)
        try:
            store.judge(pair_id, annotator, choice, order, seconds)
        except KeyError:
            abort(404, f"no pair with id {pair_id} (this database has {store.total()} pairs)")
        return jsonify(saved={"pair_id": pair_id, "choice": choice}, **progress(annotator))

    @app.post("/api/undo")
    def undo() -> Response:
        annotator = _annotator(_body({"annotator"}).get("annotator"))
        undone = store.undo(annotator)
        if undone is None:
            return jsonify(
                undone=None, pair=_pair_json(store.next_pair(annotator)), **progress(annotator)
            )
        return jsonify(
            undone={"pair_id": undone.pair_id, "choice": undone.choice},
            pair=_pair_json(store.pair(undone.pair_id)),
            **progress(annotator),
        )

    @app.get("/api/stats")
    def stats() -> Response:
        name = request.args.get("annotator")
        agreement = store.agreement()
        judgments = store.judgments()
        return jsonify(
            total=store.total(),
            judged=None if name is None else store.judged(_annotator(name)),
            judgments=len(judgments),
            annotators=len({j.annotator for j in judgments}),
            agreement={
                "kappa": agreement.kappa,
                "annotator_pairs": agreement.annotator_pairs,
                "shared": agreement.shared,
                "text": agreement.describe(),
            },
        )

    return app


def _host_name(host: str) -> str:
    """``"127.0.0.1:8765"`` → ``"127.0.0.1"``, ``"[::1]:8765"`` → ``"::1"``."""
    if host.startswith("["):
        return host[1:].partition("]")[0]
    return host.rpartition(":")[0] if ":" in host else host


def _body(fields: set[str]) -> dict[str, Any]:
    """The request's JSON object, with no field outside ``fields`` (400 otherwise)."""
    if not request.is_json:
        abort(400, "the body must be a JSON object sent as Content-Type: application/json")
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        abort(400, "the body must be a JSON object")
    if unknown := sorted(set(body) - fields):
        abort(400, f"unknown field(s) {', '.join(unknown)}; expected {', '.join(sorted(fields))}")
    return body


def _annotator(name: object) -> str:
    """The annotator name, stripped: 1 to :data:`MAX_NAME` printable characters (400 otherwise)."""
    if not isinstance(name, str) or not 0 < len(name.strip()) <= MAX_NAME:
        abort(400, f"annotator must be a name of 1 to {MAX_NAME} characters; got {name!r}")
    if not name.isprintable():
        abort(400, f"annotator must be printable characters; got {name!r}")
    return name.strip()


def _underlying(side: str, order: str) -> str:
    """A screen side as a choice between response_a and response_b."""
    if side in ("left", "right"):
        return "a" if (side == "left") == (order == "ab") else "b"
    return side


def _pair_json(pair: Pair | None) -> dict[str, Any] | None:
    if pair is None:
        return None
    left, right = pair.sides()
    return {
        "id": pair.id,
        "prompt": pair.prompt,
        "left": left,
        "right": right,
        "order": pair.order_shown,
    }
