"""The labeling page in a real browser (Debian's headless Chromium through Selenium).

``rlhf-gym label`` runs as a real process. An annotator labels pairs with the keyboard and the
mouse, undoes, the server is killed with SIGKILL and restarted on the same database, and the
page carries on at the right pair; at the end the database holds exactly the judgments the page
showed as saved. A response holding a script is shown as text, never run. The test fails (it
does not skip) when the browser cannot start. It saves the screenshot ``docs/label.png``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

SCREENSHOT = Path(__file__).parent.parent / "docs" / "label.png"
XSS = "<script>window.__xss=1</script><b>bold</b>"
PAIRS = [
    (
        "Review: the movie was",
        " a warm, funny story with a cast that clearly loved making it.",
        " long and dull, and I checked my watch twice before the end.",
    ),
    (
        "Q: how do I fix a flat bike tire? A:",
        " Take the wheel off, find the hole by pumping up the tube and listening for the hiss, "
        "then patch it or fit a new tube.",
        " Buy a new bike.",
    ),
    ("Q: what does HTML look like? A:", f" Like this: {XSS}", " Tags in angle brackets."),
    (
        "Review: the ending",
        " felt rushed, but the last scene stayed with me for days.",
        " was the best part: quiet, honest and earned.",
    ),
    (
        "Q: can you recommend a book for a long train ride? A:",
        ' Try "The Martian": short chapters, funny, and hard to put down.',
        " no",
    ),
    (
        "Review: the soundtrack",
        " is loud.",
        " carries the whole film; I have had it on repeat all week.",
    ),
    (
        "Q: how do I make my tea less bitter? A:",
        " Use water just off the boil and let it steep for two or three minutes, not five.",
        " Add more tea leaves and let it steep longer.",
    ),
    ("Review: the actors", " were fine.", " were wonderful, especially the two kids."),
]
SIDE = {"1": "left", "2": "right", "3": "tie", "s": "skip"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``rlhf-gym label`` as a child process, started and killed by the test."""

    def __init__(self, argv: list[str], log: Path, port: int) -> None:
        self.argv, self.log, self.port = argv, log, port
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        with self.log.open("a") as log:
            self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"the server exited ({self.proc.returncode}):\n{self.log.read_text()}")
            try:
                urllib.request.urlopen(self.url("/api/stats"), timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        pytest.fail(f"the server did not answer within 60 s:\n{self.log.read_text()}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def post(self, path: str, body: dict) -> dict:
        request = urllib.request.Request(
            self.url(path), json.dumps(body).encode(), {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.load(response)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    data = tmp_path / "pairs.jsonl"
    rows = [{"prompt": p, "response_a": a, "response_b": b} for p, a, b in PAIRS]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    port = free_port()
    argv = [sys.executable, "-m", "rlhf_gym.cli", "label", "--data", str(data)]
    argv += ["--db", str(tmp_path / "labels.db"), "--port", str(port)]
    s = Server(argv, tmp_path / "server.log", port)
    s.start()
    yield s
    s.kill()


@pytest.fixture
def driver() -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    options.add_argument("--window-size=1200,800")
    d = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    yield d
    d.quit()


def page(d: webdriver.Chrome) -> dict:
    """Where the page is: its state, the pair shown, the last pair it showed as saved."""
    return d.execute_script(
        "const s = document.getElementById('status');"
        "return {state: document.body.dataset.state, pair: document.body.dataset.pairId,"
        " saved: s.dataset.savedPair || null, undone: s.dataset.undonePair || null,"
        " status: s.textContent, progress: document.getElementById('progress-text').textContent,"
        " agreement: document.getElementById('agreement').textContent};"
    )


def wait(d: webdriver.Chrome, condition, what: str) -> dict:
    WebDriverWait(d, 10).until(lambda d: condition(page(d)), message=what)
    return page(d)


def label(d: webdriver.Chrome, key: str, pair_id: int, saved: dict[int, str]) -> None:
    """Press ``key`` on pair ``pair_id``; wait until the page says saved and shows the next."""
    assert page(d)["pair"] == str(pair_id)
    ActionChains(d).send_keys(key).perform()
    after = wait(
        d,
        lambda p: p["saved"] == str(pair_id) and p["state"] in ("ready", "finished"),
        f"pair {pair_id} saved after key {key!r}",
    )
    assert after["status"].startswith("Saved") and after["pair"] != str(pair_id)
    saved[pair_id] = SIDE[key]


def undo(d: webdriver.Chrome, key: str, pair_id: int, saved: dict[int, str]) -> None:
    ActionChains(d).send_keys(key).perform()
    after = wait(d, lambda p: p["undone"] == str(pair_id) and p["state"] == "ready", "undone")
    assert after["pair"] == str(pair_id)  # the undone pair is shown again
    del saved[pair_id]


def underlying(side: str, order: str) -> str:
    if side in ("left", "right"):
        return "a" if (side == "left") == (order == "ab") else "b"
    return side


def test_label_undo_kill_restart_and_no_script_runs(server: Server, driver, tmp_path: Path):
    for side in ("left", "right", "left"):  # a second annotator, for the agreement
        pair = json.load(urllib.request.urlopen(server.url("/api/next?annotator=bob")))["pair"]
        body = {"pair_id": pair["id"], "annotator": "bob", "choice": side}
        server.post("/api/judge", body | {"order": pair["order"], "seconds": 3.0})

    driver.get(server.url())
    wait(driver, lambda p: p["state"] == "name", "the page asks for a name")
    driver.find_element(By.ID, "name-input").send_keys("alice", Keys.ENTER)
    wait(driver, lambda p: p["state"] == "ready" and p["pair"] == "1", "pair 1 shown")
    assert page(driver)["progress"] == "0 / 8 judged"

    saved: dict[int, str] = {}
    label(driver, "1", 1, saved)
    label(driver, "2", 2, saved)
    # pair 3 holds a script and a <b>: shown as the literal text, neither parsed nor run
    shown = driver.find_element(By.ID, "left").text + driver.find_element(By.ID, "right").text
    assert XSS in shown
    assert (
        driver.execute_script("return document.querySelectorAll('main b, main script').length") == 0
    )
    assert driver.execute_script("return typeof window.__xss") == "undefined"
    label(driver, "3", 3, saved)
    assert (
        "Cohen's kappa"
        in wait(driver, lambda p: "kappa" in p["agreement"], "agreement")["agreement"]
    )
    label(driver, "s", 4, saved)
    undo(driver, "u", 4, saved)
    label(driver, "2", 4, saved)
    assert page(driver)["pair"] == "5"

    server.kill()  # SIGKILL: no chance to flush anything that was not committed
    server.start()
    driver.refresh()
    after = wait(driver, lambda p: p["state"] == "ready", "the page reloaded")
    assert (after["pair"], after["progress"]) == ("5", "4 / 8 judged")
    assert driver.find_element(By.ID, "annotator-name").text == "alice"  # kept in localStorage

    label(driver, "1", 5, saved)
    label(driver, "s", 6, saved)
    undo(driver, Keys.BACKSPACE, 6, saved)
    driver.find_element(By.CSS_SELECTOR, "button[data-choice='right']").click()  # the mouse
    wait(driver, lambda p: p["saved"] == "6" and p["pair"] == "7", "pair 6 saved by a click")
    saved[6] = "right"
    driver.save_screenshot(str(SCREENSHOT))
    label(driver, "3", 7, saved)
    label(driver, "2", 8, saved)
    assert wait(driver, lambda p: p["state"] == "finished", "all judged")["progress"] == (
        "8 / 8 judged"
    )
    assert driver.find_element(By.ID, "finished").is_displayed()

    db = sqlite3.connect(tmp_path / "labels.db")
    orders = dict(db.execute("SELECT id, order_shown FROM pairs"))
    rows = db.execute(
        "SELECT pair_id, choice, order_shown FROM judgments WHERE annotator = 'alice'"
    ).fetchall()
    db.close()
    assert len(rows) == len({pair_id for pair_id, _, _ in rows})  # no pair twice
    assert {pair_id: (choice, order) for pair_id, choice, order in rows} == {
        pair_id: (underlying(side, orders[pair_id]), orders[pair_id])
        for pair_id, side in saved.items()
    }
    assert len(saved) == len(PAIRS)
