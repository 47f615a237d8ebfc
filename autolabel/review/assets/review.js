"use strict";
// The review page: one card per sampled label. Verdicts live in `items` (and in localStorage, so a
// closed tab loses nothing); Save downloads them as review.csv: path,label,verdict,correct_label.
(function () {
  const data = JSON.parse(document.getElementById("review-data").textContent);
  const items = data.items;
  const classes = data.classes;
  const storeKey = "autolabel-review:" + data.sample_id;
  const grid = document.getElementById("grid");
  const APPROVE = new Set(["a", "A", "Enter", " "]);
  const REJECT = new Set(["r", "R", "x", "X"]);
  const UNDO = new Set(["u", "U", "Backspace", "Delete"]);
  let current = 0;
  let dirty = false;

  function el(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function restore() {
    let saved = null;
    try { saved = JSON.parse(localStorage.getItem(storeKey)); } catch (e) { saved = null; }
    if (Array.isArray(saved) && saved.length === items.length) {
      saved.forEach(function (v, i) { items[i].verdict = v[0] || ""; items[i].correct = v[1] || ""; });
    }
  }

  function persist() {
    try {
      localStorage.setItem(storeKey, JSON.stringify(items.map(function (it) { return [it.verdict, it.correct]; })));
    } catch (e) { /* storage off or full: the page still works, Save still saves */ }
  }

  function makeCard(item, i) {
    const card = el("div", "card");
    card.tabIndex = -1;
    card.id = "item-" + i;
    card.appendChild(el("span", "num", String(i + 1)));
    const thumb = el("div", "thumb");
    if (item.thumb) {
      const img = el("img", item.small ? "small" : "");
      img.src = item.thumb;
      img.alt = item.name;
      thumb.appendChild(img);
    } else {
      thumb.appendChild(el("div", "broken", "cannot show this image: " + item.problem));
    }
    card.appendChild(thumb);
    const proposal = el("div", "proposal");
    proposal.appendChild(el("span", "label", item.label));
    proposal.appendChild(el("span", "conf", (100 * item.confidence).toFixed(1) + " %"));
    card.appendChild(proposal);
    const name = el("div", "name", item.name);
    name.title = item.path;
    card.appendChild(name);
    card.appendChild(el("div", "verdict"));
    const buttons = el("div", "buttons");
    const ok = el("button", "ok", "\u2713 Approve");
    const no = el("button", "no", "\u2717 Reject");
    ok.title = "approve (A)";
    no.title = "reject: no class fits (R)";
    const select = el("select", "correct");
    select.title = "the right class (1-9, 0, or C)";
    select.appendChild(new Option("right class\u2026", ""));
    classes.forEach(function (c, k) {
      if (c !== item.label) select.appendChild(new Option((k < 10 ? ((k + 1) % 10) + " " : "") + c, c));
    });
    ok.addEventListener("click", function (e) { e.stopPropagation(); setCurrent(i); setVerdict(i, "approve", ""); });
    no.addEventListener("click", function (e) { e.stopPropagation(); setCurrent(i); setVerdict(i, "reject", ""); });
    select.addEventListener("click", function (e) { e.stopPropagation(); });
    select.addEventListener("change", function () {
      setCurrent(i, true);
      if (select.value) setVerdict(i, "reject", select.value);
      else if (items[i].verdict === "reject") setVerdict(i, "reject", "");
    });
    buttons.appendChild(ok);
    buttons.appendChild(no);
    buttons.appendChild(select);
    card.appendChild(buttons);
    card.addEventListener("click", function () { setCurrent(i); });
    return card;
  }

  function render(i) {
    const item = items[i], card = cards[i];
    card.classList.toggle("approve", item.verdict === "approve");
    card.classList.toggle("reject", item.verdict === "reject");
    card.querySelector(".verdict").textContent =
      item.verdict === "approve" ? "\u2713 approved" :
      item.verdict === "reject" ? (item.correct ? "\u2717 really: " + item.correct : "\u2717 rejected") : "";
    card.querySelector("select").value = item.correct;
  }

  function progress() {
    const n = items.length;
    let done = 0, approved = 0, rejected = 0, corrected = 0;
    items.forEach(function (it) {
      if (it.verdict) done++;
      if (it.verdict === "approve") approved++;
      if (it.verdict === "reject") { rejected++; if (it.correct) corrected++; }
    });
    document.getElementById("counts").textContent = done + " / " + n + " reviewed \u00b7 " + approved +
      " approved \u00b7 " + rejected + " rejected (" + corrected + " with the right class)";
    document.getElementById("bar").style.width = (n ? 100 * done / n : 0) + "%";
    document.getElementById("save").classList.toggle("done", done === n);
    document.getElementById("unsaved").hidden = !dirty;
    document.title = "(" + done + "/" + n + ") " + data.title;
  }

  function setVerdict(i, verdict, correct) {
    items[i].verdict = verdict;
    items[i].correct = verdict === "reject" ? correct : "";
    dirty = true;
    render(i);
    progress();
    persist();
  }

  function pick(i, cls) {
    if (cls === items[i].label) setVerdict(i, "approve", "");
    else setVerdict(i, "reject", cls);
  }

  function setCurrent(i, keepFocus) {
    cards[current].classList.remove("current");
    current = i;
    cards[i].classList.add("current");
    if (!keepFocus) cards[i].focus({ preventScroll: true });
  }

  function go(i) {
    setCurrent(Math.max(0, Math.min(items.length - 1, i)));
    cards[current].scrollIntoView({ block: "nearest" });
  }

  function columns() {
    return Math.max(1, getComputedStyle(grid).gridTemplateColumns.split(" ").length);
  }

  function csvField(value) {
    const s = String(value);
    return /[",\r\n]/.test(s) || s.trim() !== s ? '"' + s.replace(/"/g, '""') + '"' : s;
  }

  function reviewCsv() {
    const lines = ["path,label,verdict,correct_label"];
    items.forEach(function (it) { lines.push([it.path, it.label, it.verdict, it.correct].map(csvField).join(",")); });
    return lines.join("\n") + "\n";
  }

  function save() {
    const blob = new Blob([reviewCsv()], { type: "text/csv;charset=utf-8" });
    const link = document.createElement("a");
    link.href = URL.createObjectURL(blob);
    link.download = "review.csv";
    document.body.appendChild(link);
    link.click();
    link.remove();
    setTimeout(function () { URL.revokeObjectURL(link.href); }, 60000);
    dirty = false;
    progress();
  }

  function onKey(e) {
    if (e.target.tagName === "SELECT") {  // the class list has the keys while it is open
      if (e.key === "Escape" || e.key === "Enter") { e.preventDefault(); cards[current].focus(); }
      return;
    }
    if ((e.ctrlKey || e.metaKey) && e.key.toLowerCase() === "s") { e.preventDefault(); save(); return; }
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    const k = e.key;
    if (APPROVE.has(k)) { setVerdict(current, "approve", ""); go(current + 1); }
    else if (REJECT.has(k)) { setVerdict(current, "reject", ""); go(current + 1); }
    else if (/^[0-9]$/.test(k)) {
      const c = k === "0" ? 9 : Number(k) - 1;
      if (c >= classes.length) return;
      pick(current, classes[c]);
      go(current + 1);
    }
    else if (UNDO.has(k)) setVerdict(current, "", "");
    else if (k === "c" || k === "C") cards[current].querySelector("select").focus();
    else if (k === "ArrowRight") go(current + 1);
    else if (k === "ArrowLeft") go(current - 1);
    else if (k === "ArrowDown") go(current + columns());
    else if (k === "ArrowUp") go(current - columns());
    else if (k === "Home") go(0);
    else if (k === "End") go(items.length - 1);
    else return;
    e.preventDefault();
  }

  restore();
  document.getElementById("title").textContent = data.title;
  document.getElementById("scope").textContent = data.subtitle;
  const legend = document.getElementById("legend");
  classes.forEach(function (c, k) {
    const chip = el("button", "chip");
    if (k < 10) chip.appendChild(el("b", "", String((k + 1) % 10)));
    chip.appendChild(document.createTextNode(c));
    chip.title = "the current image is really " + c;
    chip.addEventListener("click", function () { pick(current, c); go(current + 1); });
    legend.appendChild(chip);
  });
  const cards = items.map(makeCard);
  cards.forEach(function (card, i) { grid.appendChild(card); render(i); });
  document.getElementById("save").addEventListener("click", save);
  document.addEventListener("keydown", onKey);
  const firstOpen = items.findIndex(function (it) { return !it.verdict; });
  setCurrent(firstOpen < 0 ? 0 : firstOpen);
  progress();
  window.reviewCsv = reviewCsv;  // for a console user who wants the CSV text without a download
})();
