"""The labeling page without a browser: store, JSON API, export, agreement and the command."""

from __future__ import annotations

import json
import math
import socket
import sqlite3
from pathlib import Path

import pytest

from rlhf_gym.cli import main
from rlhf_gym.feedback.label import cli as label_cli
from rlhf_gym.feedback.label.agreement import Agreement, cohen_kappa, pairwise_kappa
from rlhf_gym.feedback.label.server import STATIC, create_app
from rlhf_gym.feedback.label.store import LabelStore, export
from rlhf_gym.feedback.records import read_preferences

PAIRS = [(f"Q{i}:", f" answer a{i}", f" answer b{i}") for i in range(1, 8)]


@pytest.fixture
def store(tmp_path: Path):
    s = LabelStore(tmp_path / "labels.db")
    s.add_pairs(PAIRS, source="test", seed=0)
    yield s
    s.close()


@pytest.fixture
def client(store: LabelStore):
    return create_app(store).test_client()


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def judge(client, pair_id, choice, annotator="alice", order="ab", **extra):
    body = {"pair_id": pair_id, "annotator": annotator, "choice": choice, "order": order}
    return client.post("/api/judge", json=body | extra)


# ------------------------------------------------------------------------------------ store
def test_store_is_wal_and_a_judgment_survives_reopening(store: LabelStore):
    store.judge(1, "alice", "a", "ab", 2.5)
    store.close()
    raw = sqlite3.connect(store.path)
    assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    raw.close()
    again = LabelStore(store.path)
    assert again.total() == len(PAIRS)
    [j] = again.judgments()
    assert (j.pair_id, j.annotator, j.choice, j.order_shown, j.seconds) == (
        1,
        "alice",
        "a",
        "ab",
        2.5,
    )
    assert again.next_pair("alice").id == 2 and again.next_pair("bob").id == 1
    again.close()


def test_store_one_judgment_per_annotator_and_pair_and_undo(store: LabelStore):
    store.judge(1, "alice", "a", "ab")
    store.judge(2, "alice", "skip", "ba")
    store.judge(1, "alice", "tie", "ab")  # judging again replaces, and becomes the last
    store.judge(1, "bob", "b", "ab")
    assert sorted((j.pair_id, j.annotator, j.choice) for j in store.judgments()) == [
        (1, "alice", "tie"),
        (1, "bob", "b"),
        (2, "alice", "skip"),
    ]
    assert store.undo("alice").pair_id == 1
    assert store.undo("alice").pair_id == 2
    assert store.undo("alice") is None
    assert store.judged("alice") == 0 and store.judged("bob") == 1


def test_store_rejects_unknown_pairs_and_choices(store: LabelStore):
    with pytest.raises(KeyError):
        store.judge(99, "alice", "a", "ab")
    with pytest.raises(ValueError, match="choice must be one of a, b, tie, skip; got 'left'"):
        store.judge(1, "alice", "left", "ab")
    assert store.judgments() == []


def test_left_right_order_is_seeded_per_pair(tmp_path: Path):
    orders = []
    for name in ("x.db", "y.db"):
        s = LabelStore(tmp_path / name)
        s.add_pairs(PAIRS * 3, source="test", seed=5)
        orders.append([s.pair(i).order_shown for i in range(1, 3 * len(PAIRS) + 1)])
        s.close()
    assert orders[0] == orders[1] and set(orders[0]) == {"ab", "ba"}
    pair = LabelStore(tmp_path / "x.db").pair(1)
    assert pair.sides() == (
        (pair.response_a, pair.response_b)
        if pair.order_shown == "ab"
        else (pair.response_b, pair.response_a)
    )


def test_a_file_that_is_not_a_labeling_database(tmp_path: Path):
    (junk := tmp_path / "junk.db").write_text("not sqlite at all " * 100)
    with pytest.raises(ValueError, match="is not a labeling database"):
        LabelStore(junk)
    other = sqlite3.connect(foreign := tmp_path / "other.db")
    other.execute("CREATE TABLE t (x)")
    other.commit()
    other.close()
    with pytest.raises(ValueError, match="no pairs table"):
        LabelStore(foreign)


# -------------------------------------------------------------------------------- JSON API
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"data": "{not json", "content_type": "application/json"}, "JSON object"),
        ({"json": [1, 2]}, "JSON object"),
        ({"data": '{"pair_id": 1}', "content_type": "text/plain"}, "application/json"),
        ({"json": {"pair_id": 1, "annotator": "al", "choice": "left", "x": 1}}, "unknown field"),
        ({"json": {"pair_id": 1, "annotator": "al", "choice": "best", "order": "ab"}}, "choice"),
        ({"json": {"pair_id": "1", "annotator": "al", "choice": "left", "order": "ab"}}, "pair_id"),
        ({"json": {"pair_id": True, "annotator": "al", "choice": "tie", "order": "ab"}}, "pair_id"),
        ({"json": {"pair_id": 1, "annotator": "al", "choice": "left", "order": "a"}}, "order"),
        ({"json": {"pair_id": 1, "annotator": " ", "choice": "left", "order": "ab"}}, "annotator"),
        ({"json": {"pair_id": 1, "annotator": "x" * 65, "choice": "tie", "order": "ab"}}, "64"),
        ({"json": {"pair_id": 1, "annotator": 7, "choice": "tie", "order": "ab"}}, "annotator"),
        ({"json": {"pair_id": 1, "choice": "tie", "order": "ab"}}, "annotator"),
        (
            {
                "json": {
                    "pair_id": 1,
                    "annotator": "a",
                    "choice": "tie",
                    "order": "ab",
                    "seconds": -1,
                }
            },
            "seconds",
        ),
    ],
)
def test_bad_judge_bodies_get_400_with_a_message(client, store: LabelStore, kwargs, message):
    response = client.post("/api/judge", **kwargs)
    assert response.status_code == 400
    assert message in response.get_json()["error"]
    assert store.judgments() == []


def test_unknown_pair_id_gets_404(client):
    response = judge(client, 999, "left")
    assert response.status_code == 404
    assert "no pair with id 999" in response.get_json()["error"]


def test_queries_and_host_are_checked(client):
    assert client.get("/api/next").status_code == 400
    assert "annotator" in client.get("/api/next?annotator=").get_json()["error"]
    assert client.post("/api/undo", json={}).status_code == 400
    response = client.get("/api/stats", headers={"Host": "evil.example:80"})
    assert response.status_code == 400 and "Host" in response.get_json()["error"]
    assert client.get("/api/stats", headers={"Host": "127.0.0.1:8765"}).status_code == 200


def test_the_page_is_static_and_puts_model_text_in_as_text(client):
    response = client.get("/")
    assert response.status_code == 200
    assert "script-src 'self'" in response.headers["Content-Security-Policy"]
    html = response.get_data(as_text=True)
    response.close()  # send_file streams the file: close it (no ResourceWarning)
    assert html == (STATIC / "index.html").read_text()  # nothing rendered on the server
    assert "{{" not in html and "{%" not in html and "Q1:" not in html
    with client.get("/static/label.js") as js:
        script = js.get_data(as_text=True)
    assert "textContent" in script
    for unsafe in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert unsafe not in script


def test_next_judge_undo_flow(client, store: LabelStore):
    first = client.get("/api/next?annotator=alice").get_json()
    assert (first["judged"], first["total"]) == (0, len(PAIRS))
    pair = first["pair"]
    assert pair["id"] == 1 and pair["prompt"] == "Q1:"
    a, b = " answer a1", " answer b1"
    assert (pair["left"], pair["right"]) == ((a, b) if pair["order"] == "ab" else (b, a))

    response = judge(client, 1, "left", order=pair["order"], seconds=1.5)
    assert response.status_code == 200
    expected = "a" if pair["order"] == "ab" else "b"  # the left one, in terms of a/b
    assert response.get_json() == {
        "saved": {"pair_id": 1, "choice": expected},
        "judged": 1,
        "total": len(PAIRS),
    }
    assert [(j.choice, j.order_shown, j.seconds) for j in store.judgments()] == [
        (expected, pair["order"], 1.5)
    ]
    assert judge(client, 2, "skip", order="ba").status_code == 200
    assert client.get("/api/next?annotator=alice").get_json()["pair"]["id"] == 3
    assert client.get("/api/next?annotator=bob").get_json()["pair"]["id"] == 1

    undone = client.post("/api/undo", json={"annotator": "alice"}).get_json()
    assert undone["undone"] == {"pair_id": 2, "choice": "skip"}
    assert undone["pair"]["id"] == 2 and undone["judged"] == 1
    assert client.get("/api/next?annotator=alice").get_json()["pair"]["id"] == 2
    assert client.post("/api/undo", json={"annotator": "bob"}).get_json()["undone"] is None

    for i in range(2, len(PAIRS) + 1):
        assert judge(client, i, "tie").status_code == 200
    done = client.get("/api/next?annotator=alice").get_json()
    assert done == {"pair": None, "judged": len(PAIRS), "total": len(PAIRS)}


def test_stats_report_progress_and_agreement(client):
    for i, (x, y) in enumerate([("left", "left"), ("right", "right"), ("left", "right")], 1):
        judge(client, i, x, "alice")
        judge(client, i, y, "bob")
    judge(client, 4, "skip", "bob")
    stats = client.get("/api/stats?annotator=bob").get_json()
    assert (stats["total"], stats["judged"], stats["judgments"], stats["annotators"]) == (
        len(PAIRS),
        4,
        7,
        2,
    )
    # alice a, b, a against bob a, b, b: p_o = 2/3, p_e = 2/3·1/3 + 1/3·2/3 = 4/9
    assert stats["agreement"]["kappa"] == pytest.approx((2 / 3 - 4 / 9) / (1 - 4 / 9))
    assert (stats["agreement"]["annotator_pairs"], stats["agreement"]["shared"]) == (1, 3)
    assert "Cohen's kappa 0.40" in stats["agreement"]["text"]


def test_a_restart_continues_where_the_annotator_stopped(store: LabelStore):
    client = create_app(store).test_client()
    for i in (1, 2, 3):
        assert judge(client, i, "right").status_code == 200
    client.post("/api/undo", json={"annotator": "alice"})
    store.close()  # the server is gone; everything it answered OK to is committed

    again = LabelStore(store.path)
    client = create_app(again).test_client()
    answer = client.get("/api/next?annotator=alice").get_json()
    assert (answer["pair"]["id"], answer["judged"]) == (3, 2)
    again.close()


# ---------------------------------------------------------------------------------- export
def test_export_aggregates_votes_per_pair(store: LabelStore, tmp_path: Path):
    votes = {
        1: {"alice": "a", "bob": "a"},  # unanimous A: hard
        2: {"alice": "b", "bob": "b"},  # unanimous B: hard, response_b chosen
        3: {"alice": "a", "bob": "tie"},  # 0.75
        4: {"alice": "a", "bob": "b"},  # 0.5: a tie
        5: {"alice": "skip"},  # only skips
        6: {"alice": "b", "bob": "tie", "carol": "b"},  # 1/6: response_b first with 5/6
    }  # pair 7: not judged
    for pair_id, by in votes.items():
        for name, choice in by.items():
            store.judge(pair_id, name, choice, "ab")
    report = export(store, out := tmp_path / "prefs.jsonl")
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows == [
        {
            "prompt": "Q1:",
            "chosen": " answer a1",
            "rejected": " answer b1",
            "pair_id": 1,
            "annotators": ["alice", "bob"],
            "votes": {"alice": 1.0, "bob": 1.0},
        },
        {
            "prompt": "Q2:",
            "chosen": " answer b2",
            "rejected": " answer a2",
            "pair_id": 2,
            "annotators": ["alice", "bob"],
            "votes": {"alice": 1.0, "bob": 1.0},
        },
        {
            "prompt": "Q3:",
            "response_a": " answer a3",
            "response_b": " answer b3",
            "p_a": 0.75,
            "pair_id": 3,
            "annotators": ["alice", "bob"],
            "votes": {"alice": 1.0, "bob": 0.5},
        },
        {
            "prompt": "Q6:",
            "response_a": " answer b6",
            "response_b": " answer a6",
            "p_a": pytest.approx(5 / 6),
            "pair_id": 6,
            "annotators": ["alice", "bob", "carol"],
            "votes": {"alice": 1.0, "bob": 0.5, "carol": 1.0},
        },
    ]
    assert (report.exported, report.ties, report.skipped, report.unjudged) == (4, 1, 1, 1)
    assert report.annotators == 3 and "1 dropped as ties" in report.summary()
    assert len(read_preferences(out).records) == 4  # our reader takes it back

    report = export(store, out, ties="keep")
    kept = [json.loads(line) for line in out.read_text().splitlines()]
    assert report.exported == 5 and report.ties == 0
    tie = next(r for r in kept if r["pair_id"] == 4)
    assert (tie["response_a"], tie["p_a"], tie["votes"]) == (
        " answer a4",
        0.5,
        {"alice": 1.0, "bob": 0.0},
    )
    with pytest.raises(ValueError, match="--ties must be one of drop, keep; got 'maybe'"):
        export(store, out, ties="maybe")


# ------------------------------------------------------------------------------- agreement
def test_cohen_kappa_of_a_hand_worked_table():
    # rows alice, columns bob:  a  b  tie
    #                       a   4  1  0
    #                       b   0  3  1
    #                     tie   0  0  1
    # p_o = 8/10; marginals alice (5, 4, 1), bob (4, 4, 2): p_e = (20 + 16 + 2)/100 = 0.38;
    # kappa = (0.8 - 0.38) / 0.62 = 21/31
    alice = ["a"] * 5 + ["b"] * 4 + ["tie"]
    bob = ["a"] * 4 + ["b"] + ["b"] * 3 + ["tie"] + ["tie"]
    assert cohen_kappa(alice, bob) == pytest.approx(21 / 31)
    assert cohen_kappa(alice, alice) == pytest.approx(1.0)
    assert math.isnan(cohen_kappa(["a", "a"], ["a", "a"]))  # p_e = 1: undefined


def test_mean_pairwise_kappa_over_annotator_pairs_that_share_items():
    alice = {1: "a", 2: "b", 3: "a", 4: "tie", 5: "a"}
    bob = {1: "a", 2: "b", 3: "b"}  # with alice: kappa (2/3 - 4/9)/(5/9) = 0.4
    carol = {4: "tie", 5: "a", 9: "b"}  # with alice (items 4, 5): kappa 1; none with bob
    agreement = pairwise_kappa({"alice": alice, "bob": bob, "carol": carol})
    assert agreement == Agreement(pytest.approx((0.4 + 1.0) / 2), 2, 5)
    assert pairwise_kappa({"alice": alice}) == Agreement(None, 0, 0)
    assert pairwise_kappa({"x": {1: "a"}, "y": {1: "a"}}) == Agreement(None, 1, 1)


def test_agreement_leaves_out_skips(store: LabelStore):
    for pair_id, x, y in [(1, "a", "a"), (2, "b", "b"), (3, "skip", "a"), (4, "b", "skip")]:
        store.judge(pair_id, "alice", x, "ab")
        store.judge(pair_id, "bob", y, "ab")
    assert store.agreement() == Agreement(1.0, 1, 2)


# ------------------------------------------------------------------------------ the command
def test_export_through_the_command(store: LabelStore, tmp_path: Path, capsys):
    store.judge(1, "alice", "a", "ba")
    store.judge(2, "alice", "skip", "ab")
    out = tmp_path / "out" / "prefs.jsonl"
    assert main(["label", "--db", str(store.path), "--export", str(out)]) == 0
    assert [r.response_a for r in read_preferences(out).records] == [" answer a1"]
    printed = capsys.readouterr().out
    assert "wrote 1 preferences" in printed and "1 skipped" in printed
    assert "no pair judged by two annotators yet" in printed


@pytest.mark.parametrize(
    ("argv", "names"),
    [
        (["--data", "{tmp}/missing.jsonl"], ["--data", "missing.jsonl", "does not exist"]),
        (["--host", "0.0.0.0"], ["--host '0.0.0.0'", "--allow-remote"]),
        (["--host", "example.org"], ["--host 'example.org'", "--allow-remote"]),
        (["--db", "{tmp}/none.db", "--export", "{tmp}/p.jsonl"], ["--db", "none.db"]),
        (["--export", "{tmp}/p.jsonl", "--ties", "sometimes"], ["--ties", "drop, keep"]),
        (["--data", "a.jsonl", "--policy", "b"], ["--data or --policy"]),
        (["--policy", "{tmp}/no-model"], ["no-model", "no such directory"]),
        (
            ["--task", "poetry"],
            ["--task must be one of sentiment, harmless, helpful_harmless; got 'poetry'"],
        ),
        (["--pairs", "0"], ["--pairs must be >= 1"]),
    ],
)
def test_bad_command_lines_end_in_one_message(tmp_path: Path, capsys, argv, names):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(["label", "--db", str(tmp_path / "labels.db"), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rlhf-gym label: error: ") and err.count("\n") == 1
    assert "Traceback" not in err
    for name in names:
        assert name in err
    assert not (tmp_path / "labels.db").exists()  # nothing created


def test_a_port_in_use_is_a_clear_error(tmp_path: Path, capsys):
    data = write_jsonl(
        tmp_path / "pairs.jsonl", [{"prompt": "Q", "chosen": " x", "rejected": " y"}]
    )
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        argv = ["label", "--data", str(data), "--db", str(tmp_path / "l.db"), "--port", str(port)]
        assert main(argv) == 2
    assert f"cannot serve on --host 127.0.0.1 --port {port}" in capsys.readouterr().err


def test_read_pairs_takes_our_formats_and_unlabeled_pairs(tmp_path: Path):
    ours = write_jsonl(
        tmp_path / "ours.jsonl",
        [
            {"prompt": "P", "chosen": " x", "rejected": " y"},
            {"prompt": "P", "response_a": " u", "response_b": " v", "p_a": 0.2},
        ],
    )
    assert label_cli.read_pairs(ours)[0] == [("P", " x", " y"), ("P", " u", " v")]
    unlabeled = write_jsonl(
        tmp_path / "unlabeled.jsonl",
        [
            {"prompt": "P", "response_a": " u", "response_b": " v", "id": 3},
            {"prompt": "P", "response_a": " v", "response_b": " u"},  # a duplicate
            {"prompt": "P", "response_a": " w", "response_b": " w"},  # identical
        ],
    )
    pairs, note = label_cli.read_pairs(unlabeled)
    assert pairs == [("P", " u", " v")] and "(2 dropped)" in note
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "P", "response_a": " u"}])
    with pytest.raises(ValueError, match=r"bad.jsonl:1: expected string fields prompt, response_a"):
        label_cli.read_pairs(bad)


def test_an_existing_db_keeps_its_pairs(tmp_path: Path, capsys):
    data = write_jsonl(
        tmp_path / "pairs.jsonl", [{"prompt": "P", "chosen": " x", "rejected": " y"}]
    )
    db = str(tmp_path / "labels.db")
    label_cli.open_store(label_cli.LabelConfig(data=str(data), db=db)).close()
    data.unlink()  # a restart needs neither the file nor --data
    store = label_cli.open_store(label_cli.LabelConfig(db=db))
    assert store.total() == 1
    store.close()
    other = write_jsonl(
        tmp_path / "other.jsonl", [{"prompt": "Q", "chosen": " a", "rejected": " b"}]
    )
    with pytest.raises(ValueError, match="already holds 1 pairs from data:.*use another --db"):
        label_cli.open_store(label_cli.LabelConfig(data=str(other), db=db))


def test_pairs_are_sampled_once_from_the_reference(tmp_path: Path, monkeypatch):
    db = str(tmp_path / "labels.db")
    store = label_cli.open_store(label_cli.LabelConfig(pairs=4, db=db))
    pairs = [store.pair(i) for i in range(1, 5)]
    assert store.total() == 4 and store.meta("source") == "reference:sentiment"
    assert all(p.response_a != p.response_b for p in pairs)
    store.close()

    def no_sampling(*args, **kwargs):
        raise AssertionError("a restart must not sample again")

    monkeypatch.setattr(label_cli, "sample_pairs", no_sampling)
    store = label_cli.open_store(label_cli.LabelConfig(pairs=4, db=db))
    assert [store.pair(i) for i in range(1, 5)] == pairs
    store.close()
