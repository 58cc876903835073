// The labeling page (rlhf-gym label): see docs/labeling.md for the keys and the API.
// Model text is only ever set with textContent: it is shown as text, never parsed as HTML.
// <body data-state> is loading | name | ready | saving | error | finished, and
// <body data-pair-id> the pair shown, so that tests (and people) can tell where the page is.
"use strict";

(() => {
  const NAME_KEY = "rlhf-gym-label.annotator";
  const KEYS = { 1: "left", 2: "right", 3: "tie", s: "skip", S: "skip" };
  const SAID = { left: "left is better", right: "right is better", tie: "tie", skip: "skipped" };
  const $ = (id) => document.getElementById(id);

  let annotator = localStorage.getItem(NAME_KEY) || "";
  let current = null; // the pair shown: {id, prompt, left, right, order}
  let shownAt = 0;
  let busy = false; // a request is on its way: keys wait for it

  function setState(state) {
    document.body.dataset.state = state;
  }

  function say(text, kind, data = {}) {
    const status = $("status");
    status.textContent = text;
    status.className = kind || "";
    for (const key of ["savedPair", "savedChoice", "undonePair"]) delete status.dataset[key];
    Object.assign(status.dataset, data);
  }

  async function api(method, path, body) {
    const init = { method, headers: { Accept: "application/json" } };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch {
      throw new Error("the server does not answer (is rlhf-gym label still running?)");
    }
    const data = await response.json().catch(() => null);
    if (!response.ok) throw new Error((data && data.error) || `HTTP ${response.status}`);
    return data;
  }

  function show(answer) {
    const { pair, judged, total } = answer;
    $("progress-text").textContent = `${judged} / ${total} judged`;
    $("bar-fill").style.width = `${total ? (100 * judged) / total : 0}%`;
    current = pair;
    $("pair").hidden = pair === null;
    $("finished").hidden = pair !== null;
    document.body.dataset.pairId = pair === null ? "" : String(pair.id);
    if (pair === null) {
      setState("finished");
      return;
    }
    $("pair-id").textContent = `#${pair.id}`;
    $("prompt").textContent = pair.prompt;
    $("left").textContent = pair.left;
    $("right").textContent = pair.right;
    shownAt = performance.now();
    setState("ready");
  }

  async function refreshStats() {
    try {
      const stats = await api("GET", `/api/stats?annotator=${encodeURIComponent(annotator)}`);
      $("agreement").textContent = `Agreement: ${stats.agreement.text}`;
    } catch {
      $("agreement").textContent = "";
    }
  }

  async function loadNext() {
    show(await api("GET", `/api/next?annotator=${encodeURIComponent(annotator)}`));
  }

  async function judge(choice) {
    if (busy || current === null || !annotator) return;
    busy = true;
    const pair = current;
    const seconds = Math.round(performance.now() - shownAt) / 1000;
    setState("saving");
    say("saving…", "pending");
    try {
      const answer = await api("POST", "/api/judge", {
        pair_id: pair.id, annotator, choice, order: pair.order, seconds,
      });
      say(`Saved: pair #${pair.id}, ${SAID[choice]}.`, "saved",
        { savedPair: String(pair.id), savedChoice: answer.saved.choice });
    } catch (error) {
      say(`Not saved: ${error.message}. Press the key again.`, "error");
      setState("error");
      busy = false;
      return;
    }
    try {
      await loadNext();
    } catch (error) {
      say(`Saved pair #${pair.id}, but the next pair did not load: ${error.message}. `
        + "Reload the page.", "error");
      setState("error");
      current = null;
    }
    busy = false;
    refreshStats();
  }

  async function undo() {
    if (busy || !annotator) return;
    busy = true;
    setState("saving");
    say("undoing…", "pending");
    try {
      const answer = await api("POST", "/api/undo", { annotator });
      if (answer.undone === null) say("Nothing to undo.", "");
      else {
        say(`Undone: pair #${answer.undone.pair_id}. Judge it again.`, "saved",
          { undonePair: String(answer.undone.pair_id) });
      }
      show(answer);
    } catch (error) {
      say(`Not undone: ${error.message}.`, "error");
      setState(current === null ? "finished" : "error");
    }
    busy = false;
    refreshStats();
  }

  async function start() {
    $("annotator-name").textContent = annotator;
    setState("loading");
    try {
      await loadNext();
      say(current === null ? "" : "Which response is better?", "");
    } catch (error) {
      say(`Cannot load pairs: ${error.message}.`, "error");
      setState("error");
    }
    refreshStats();
  }

  function askName() {
    $("pair").hidden = true;
    $("finished").hidden = true;
    $("name-form").hidden = false;
    $("name-input").value = annotator;
    $("name-input").focus();
    setState("name");
  }

  $("name-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const name = $("name-input").value.trim();
    if (!name) return;
    annotator = name;
    localStorage.setItem(NAME_KEY, name);
    $("name-form").hidden = true;
    start();
  });
  $("change-name").addEventListener("click", askName);

  for (const element of document.querySelectorAll("[data-choice]")) {
    element.addEventListener("click", () => {
      element.blur(); // Space or Enter must not press it again on the next pair
      judge(element.dataset.choice);
    });
  }
  for (const element of document.querySelectorAll("[data-undo]")) {
    element.addEventListener("click", () => {
      element.blur();
      undo();
    });
  }

  document.addEventListener("keydown", (event) => {
    if (event.target instanceof HTMLInputElement || event.repeat) return;
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    if (document.body.dataset.state === "name") return;
    if (KEYS[event.key]) {
      event.preventDefault();
      judge(KEYS[event.key]);
    } else if (event.key === "u" || event.key === "U" || event.key === "Backspace") {
      event.preventDefault();
      undo();
    }
  });

  if (annotator) start();
  else askName();
})();
