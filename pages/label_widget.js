// Juicer's labeling widget (Streamlit components v2): holds the leased images in the browser and
// handles keys itself, so the picture on screen and the answer a key makes are decided in the same
// event handler. Python tops up the window and acknowledges answers; it never drives the display.

// Module state lives on window, keyed by the Python key, so it survives re-renders and remounts.
const WIDGETS = (window.__juicerLabelWidget = window.__juicerLabelWidget || {});
const NOTE_MS = 2500;
const RESEND_MS = 1500;     // a send not answered by a redraw in this time is sent again
const HISTORY_SHOWN = 10;   // answers listed (each clickable to change it)
const SRCS_KEPT = 100;      // pictures of past answers kept for undo and the list
const FILTER_FROM = 11;     // classes from which a type-to-filter box is shown
const TYPING_INPUT_TYPES = new Set(["checkbox", "radio", "button", "submit", "reset", "range",
                                    "color", "file", "image"]);
const MARK_TEXT = {
  holdout: "Hold-out image: no suggestion is shown, because hold-out answers score the model.",
  audit: "Audit image: no suggestion is shown, because audits measure how often auto-accept "
    + "is right.",
};

function newWidget(key) {
  return {
    key,
    root: null,                 // the .lw-root element of the current mount
    els: null,
    setStateValue: null,
    classes: [],
    classesSignature: null,
    status: {},
    storageKey: null,
    queue: [],                  // queue[0] is the item on screen (unless an answer is being changed)
    done: new Set(),            // image ids answered or skipped here (and not undone)
    history: [],                // {item, action, cls, uid}, newest last, for undo and the list
    editing: null,              // the history entry whose answer is being changed
    outbox: [],                 // answers the server has not acknowledged
    settledUids: new Set(),     // uids acknowledged
    refusedUids: new Map(),     // uid -> reason
    saved: 0,
    refused: 0,
    inflight: null,             // {uids, at}: the last send, until a redraw settles it
    sendTimer: null,
    srcs: new Map(),            // image_id -> data URL: the server sends each picture once
    haveSignature: null,        // the image ids last reported as held
    images: new Map(),          // image_id -> decoded <img>
    noteTimer: null,
    onKey: null,
  };
}

function randomUid() {
  // crypto.randomUUID exists only in secure contexts; getRandomValues exists everywhere.
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

// ---------------------------------------------------------------- outbox and persistence

function readStored(w) {
  if (!w.storageKey) return [];
  try {
    const parsed = JSON.parse(localStorage.getItem(w.storageKey) || "[]");
    return Array.isArray(parsed) ? parsed.filter((a) => a && typeof a.uid === "string") : [];
  } catch (err) {
    return [];
  }
}

function persist(w) {
  if (!w.storageKey) return;
  // Another tab may share the key: keep its unsettled answers, replace ours.
  const mine = new Set(w.outbox.map((a) => a.uid));
  const others = readStored(w).filter((a) => !mine.has(a.uid) && !w.settledUids.has(a.uid));
  try {
    localStorage.setItem(w.storageKey, JSON.stringify(others.concat(w.outbox)));
  } catch (err) {
    // Storage full or disabled: the answers still go to the server from memory.
  }
}

// One send at a time: a send starts a server run, and a second send while it runs would stop it
// before it draws (Streamlit restarts a run on new input), starving the window of new images.
// Answers typed meanwhile go with the next send, as soon as a redraw settles this one.
function send(w, force) {
  if (!w.setStateValue) return;
  const now = performance.now();
  if (!force && w.inflight && now - w.inflight.at < RESEND_MS) {
    scheduleSend(w, RESEND_MS - (now - w.inflight.at));
    return;
  }
  clearTimeout(w.sendTimer);
  w.sendTimer = null;
  w.inflight = { uids: w.outbox.map((a) => a.uid), at: now };
  // Which pictures this page holds, so the server sends only the others; set in the same tick
  // as the answers, which Streamlit sends as one update (one run).
  const have = Array.from(w.srcs.keys()).sort((a, b) => a - b);
  const signature = have.join(",");
  if (signature !== w.haveSignature) {
    w.haveSignature = signature;
    w.setStateValue("have", have);
  }
  w.setStateValue("answers", w.outbox.map((a) => ({ ...a })));
}

function scheduleSend(w, ms) {
  if (w.sendTimer) return;
  w.sendTimer = setTimeout(() => {
    w.sendTimer = null;
    if (w.outbox.length && w.root && w.root.isConnected) send(w);
  }, Math.max(10, ms));
}

function afterRedraw(w) {
  // The redraw settled the last send when none of its answers is still waiting.
  if (w.inflight && w.inflight.uids.every((u) => w.settledUids.has(u) || w.refusedUids.has(u))) {
    w.inflight = null;
  }
  const unsent = w.outbox.some((a) => !w.inflight || !w.inflight.uids.includes(a.uid));
  if (!w.inflight && unsent) send(w);
}

function restoreOutbox(w) {
  const known = new Set(w.outbox.map((a) => a.uid));
  const restored = readStored(w).filter((a) => !known.has(a.uid) && !w.settledUids.has(a.uid));
  if (!restored.length) return false;
  restored.sort((a, b) => (a.t || 0) - (b.t || 0));
  for (const a of restored) {
    w.outbox.push(a);
    if (a.action === "answer" || a.action === "skip" || a.action === "flag") w.done.add(a.image_id);
    else if (a.action === "undo") w.done.delete(a.image_id);
  }
  return true;
}

function settle(w, acked, refused) {
  let changed = false;
  const settleOne = (uid) => {
    if (w.settledUids.has(uid) || w.refusedUids.has(uid)) return false;
    const i = w.outbox.findIndex((a) => a.uid === uid);
    if (i >= 0) w.outbox.splice(i, 1);
    changed = true;
    return i >= 0;
  };
  for (const uid of acked || []) {
    const s = String(uid);
    if (settleOne(s)) w.saved += 1;
    w.settledUids.add(s);
  }
  for (const [uid, reason] of Object.entries(refused || {})) {
    const s = String(uid);
    if (settleOne(s)) {
      w.refused += 1;
      note(w, "not saved: " + String(reason));
    }
    if (!w.refusedUids.has(s)) w.refusedUids.set(s, String(reason));
  }
  if (changed) persist(w);
  return changed;
}

// ---------------------------------------------------------------- answers

function suggestionShown(item) {
  return !!item && !item.mark && item.suggestion !== null && item.suggestion !== undefined;
}

function makeAnswer(item, action, cls) {
  return {
    uid: randomUid(),
    image_id: item ? item.image_id : null,
    action,
    class: cls,
    model_version: action !== "undo" && suggestionShown(item) ? item.model_version ?? null : null,
    t: Date.now(),
  };
}

function record(w, answer) {
  w.outbox.push(answer);
  persist(w);
  send(w);
  renderSaved(w);
}

function onScreen(w) {
  const item = w.editing ? w.editing.item : w.queue[0] || null;
  // An image whose picture has not arrived is not on screen: a key must not answer it blind.
  return item && w.srcs.has(item.image_id) ? item : null;
}

// One function for keys and clicks: read the item on screen, tag the answer with it, and move
// the display on before returning, so the next key sees the next image.
function perform(w, act) {
  if (act.type === "undo") {
    if (w.editing) return stopEditing(w);
    return undo(w);
  }
  const item = onScreen(w);
  if (act.type === "submit") {
    record(w, makeAnswer(w.queue[0] || null, "submit", null));
    note(w, "batch submitted");
    return;
  }
  if (!item) {
    note(w, "key ignored: no image on screen");
    return;
  }
  let action = "answer";
  let cls = null;
  if (act.type === "confirm") {
    if (!suggestionShown(item)) {
      note(w, "no suggestion: pick a class");
      return;
    }
    cls = item.suggestion;
  } else if (act.type === "class") {
    if (act.index >= w.classes.length) {
      note(w, `no class on key ${act.label}`);
      return;
    }
    cls = w.classes[act.index];
  } else if (act.type === "flag") {
    action = "flag";
  } else {
    action = "skip";
  }
  const answer = makeAnswer(item, action, cls);
  const entry = { item, action, cls, uid: answer.uid };
  if (w.editing) {
    // A change is a new answer for the same image: it replaces the old one in the list and
    // becomes the newest answer (the one undo takes back first, as the server sees it too).
    w.history = w.history.filter((h) => h !== w.editing);
    w.editing = null;
    note(w, `changed: ${item.name || "image " + item.image_id} is now ${answerText(entry)}`);
  } else {
    w.queue.shift();
  }
  item.restored = false;
  w.done.add(item.image_id);
  w.history.push(entry);
  showCurrent(w);
  record(w, answer);
  renderHistory(w);
}

function undo(w) {
  const entry = w.history.pop();
  if (!entry) {
    note(w, "nothing to undo");
    return;
  }
  const item = entry.item;
  w.done.delete(item.image_id);
  item.restored = true;   // keep it on screen even if the server's window does not list it yet
  w.queue = [item].concat(w.queue.filter((x) => x.image_id !== item.image_id));
  showCurrent(w);
  record(w, makeAnswer(item, "undo", null));
  renderHistory(w);
}

// After a reload: the last answers as the store has them (saved, by definition), so the list and
// undo go on where the last page left off.
function seedHistory(w, rows) {
  for (const r of rows) {
    if (r.src) w.srcs.set(r.image_id, r.src);
    const item = { image_id: r.image_id, name: r.name, suggestion: null, confidence: null,
                   model_version: null, mark: null, restored: false };
    w.done.add(r.image_id);
    w.history.push({ item, action: r.action, cls: r.class, uid: null });
  }
  renderHistory(w);
}

function startEditing(w, entry) {
  w.editing = entry;
  showCurrent(w);
}

function stopEditing(w) {
  w.editing = null;
  showCurrent(w);
}

// ---------------------------------------------------------------- merging Python's window

function mergeItems(w, incoming) {
  const fresh = new Map();
  for (const it of incoming) {
    if (it.src) w.srcs.set(it.image_id, it.src);
    const { src, ...rest } = it;   // pictures live in w.srcs, by image id
    fresh.set(it.image_id, rest);
  }
  const current = w.queue[0] || null;
  const next = [];
  const seen = new Set();
  const keep = (old, isCurrent) => {
    if (seen.has(old.image_id) || (w.done.has(old.image_id) && !old.restored)) return;
    const update = fresh.get(old.image_id);
    if (update && !isCurrent) {
      // Update in place (a retrained model's suggestion), but never the item being looked at.
      next.push({ ...update, restored: old.restored });
    } else if (update || old.restored) {
      next.push(old);
    } else {
      return;   // the server took this lease back
    }
    seen.add(old.image_id);
  };
  if (current) keep(current, true);
  for (const old of w.queue.slice(1)) keep(old, false);
  for (const it of fresh.values()) {
    if (!seen.has(it.image_id) && !w.done.has(it.image_id)) {
      next.push({ ...it, restored: false });
      seen.add(it.image_id);
    }
  }
  w.queue = next;
  return next[0] !== current;
}

// ---------------------------------------------------------------- drawing

function el(tag, className, text) {
  const e = document.createElement(tag);
  if (className) e.className = className;
  if (text !== undefined) e.textContent = text;
  return e;
}

function imageFor(w, item) {
  const src = w.srcs.get(item.image_id);
  if (!src) return null;
  let img = w.images.get(item.image_id);
  if (img && img.__src === src) return img;
  img = new Image();
  img.__src = src;
  img.className = "lw-img";
  img.alt = String(item.name ?? "");
  img.draggable = false;
  img.src = src;
  // Decode ahead so showing it later is a synchronous swap; until decoded the stage stays blank,
  // never showing an earlier picture.
  img.decode().then(() => {
    const stage = w.els && w.els.stage;
    const box = stage ? Math.min(stage.clientWidth || 480, stage.clientHeight || 480) : 480;
    img.classList.toggle("lw-enlarged", Math.max(img.naturalWidth, img.naturalHeight) < box);
  }).catch(() => img.classList.add("lw-broken"));
  w.images.set(item.image_id, img);
  return img;
}

function preload(w) {
  const wanted = new Set();
  for (const item of w.queue) { imageFor(w, item); wanted.add(item.image_id); }
  for (const entry of w.history.slice(-HISTORY_SHOWN)) wanted.add(entry.item.image_id);
  for (const id of Array.from(w.images.keys())) if (!wanted.has(id)) w.images.delete(id);
  const keep = new Set(wanted);
  for (const entry of w.history.slice(-SRCS_KEPT)) keep.add(entry.item.image_id);
  for (const id of Array.from(w.srcs.keys())) if (!keep.has(id)) w.srcs.delete(id);
}

function answerText(entry) {
  if (entry.action === "skip") return "skipped";
  if (entry.action === "flag") return "flagged for the lead";
  return String(entry.cls);
}

function showCurrent(w) {
  const els = w.els;
  if (!els) return;
  const item = onScreen(w);
  els.root.dataset.imageId = item ? String(item.image_id) : "";
  els.root.dataset.suggestion = suggestionShown(item) ? String(item.suggestion) : "";
  els.root.dataset.modelVersion = suggestionShown(item) ? String(item.model_version ?? "") : "";
  els.root.dataset.editing = w.editing ? String(w.editing.item.image_id) : "";
  els.editing.hidden = !w.editing;
  if (w.editing) {
    els.editing.textContent = `Changing your answer (${answerText(w.editing)}) for this image: `
      + "press a class key, Enter, S or F; Esc or U leaves it as it was.";
  }
  if (!item) {
    const loading = w.queue.length > 0;
    els.stage.replaceChildren(el("div", "lw-waiting",
                                 loading ? "Loading the picture..." : "Waiting for more images..."));
    els.name.textContent = "";
    els.suggestion.textContent = "";
    els.mark.textContent = "";
    markSuggested(w, null);
    return;
  }
  els.stage.replaceChildren(imageFor(w, item));
  els.name.textContent = String(item.name ?? "");
  if (item.mark) {
    els.suggestion.textContent = "";
    els.mark.textContent = MARK_TEXT[item.mark] || `${item.mark} image: no suggestion is shown.`;
  } else if (suggestionShown(item)) {
    const conf = typeof item.confidence === "number"
      ? ` ${Math.round(100 * item.confidence)}%` : "";
    const version = item.model_version !== null && item.model_version !== undefined
      ? ` · model v${item.model_version}` : "";
    els.suggestion.textContent = `suggestion: ${item.suggestion}${conf}${version} (Enter)`;
    els.mark.textContent = "";
  } else {
    els.suggestion.textContent = "no suggestion: pick a class";
    els.mark.textContent = "";
  }
  markSuggested(w, suggestionShown(item) ? String(item.suggestion) : null);
}

function markSuggested(w, cls) {
  for (const b of w.els.classes.children) b.classList.toggle("lw-suggested", b.__cls === cls);
}

function keyLabel(index) {
  return index < 9 ? String(index + 1) : index === 9 ? "0" : "";
}

function renderClasses(w) {
  const box = w.els.classes;
  box.replaceChildren();
  w.classes.forEach((cls, index) => {
    const b = el("button", "lw-class");
    b.type = "button";
    b.tabIndex = -1;   // a focused button would also react to Enter
    b.__cls = cls;
    b.title = cls;
    const label = keyLabel(index);
    if (label) b.append(el("kbd", "lw-key", label));
    b.append(el("span", "lw-class-name", cls));
    b.addEventListener("mousedown", (e) => e.preventDefault());
    b.addEventListener("click", () => perform(w, { type: "class", index, label: label || cls }));
    box.append(b);
  });
  w.els.filter.hidden = w.classes.length < FILTER_FROM;
  applyFilter(w);
}

function filterMatches(w) {
  const text = w.els.filter.value.trim().toLowerCase();
  return w.classes.map((c, i) => [c, i]).filter(([c]) => !text || c.toLowerCase().includes(text));
}

function applyFilter(w) {
  const shown = new Set(filterMatches(w).map(([, i]) => i));
  Array.from(w.els.classes.children).forEach((b, i) => { b.hidden = !shown.has(i); });
}

function bindFilter(w) {
  const box = w.els.filter;
  box.addEventListener("input", () => applyFilter(w));
  box.addEventListener("keydown", (e) => {
    if (e.key === "Escape") {
      box.value = "";
      applyFilter(w);
      box.blur();
    } else if (e.key === "Enter") {
      e.preventDefault();
      const matches = filterMatches(w);
      if (matches.length !== 1) {
        note(w, matches.length ? `${matches.length} classes match: type more` : "no class matches");
        return;
      }
      box.value = "";
      applyFilter(w);
      box.blur();   // the next digit labels again
      const [cls, index] = matches[0];
      perform(w, { type: "class", index, label: cls });
    }
  });
}

function renderSaved(w) {
  if (!w.els) return;
  const parts = [`${w.saved} answer${w.saved === 1 ? "" : "s"} saved`];
  if (w.outbox.length) parts.push(`${w.outbox.length} sending…`);
  if (w.refused) parts.push(`${w.refused} refused`);
  w.els.saved.textContent = parts.join(" · ");
  w.els.root.dataset.outbox = String(w.outbox.length);
  w.els.root.dataset.saved = String(w.saved);
  renderHistoryMarks(w);
}

function entryState(w, entry) {
  if (entry.uid === null) return ["saved", "✓ saved"];
  if (w.refusedUids.has(entry.uid)) return ["refused", "✗ not saved: " + w.refusedUids.get(entry.uid)];
  if (w.settledUids.has(entry.uid)) return ["saved", "✓ saved"];
  return ["sending", "… sending"];
}

function renderHistory(w) {
  if (!w.els) return;
  const list = w.els.history;
  const shown = w.history.slice(-HISTORY_SHOWN).reverse();
  w.els.historyBox.hidden = shown.length === 0;
  list.replaceChildren();
  for (const entry of shown) {
    const li = el("li", "lw-history-entry");
    const b = el("button", "lw-history-button");
    b.type = "button";
    b.tabIndex = -1;
    b.dataset.imageId = String(entry.item.image_id);
    const src = w.srcs.get(entry.item.image_id);
    if (src) {
      const thumb = el("img", "lw-thumb");
      thumb.src = src;
      thumb.alt = "";
      b.append(thumb);
    }
    const text = el("span", "lw-history-text");
    const name = String(entry.item.name || `image ${entry.item.image_id}`);
    text.append(el("span", "lw-history-answer", answerText(entry)),
                el("span", "lw-history-name", name.split("/").pop()));
    const mark = el("span", "lw-history-state");
    text.append(mark);
    b.append(text);
    b.__entry = entry;
    b.addEventListener("mousedown", (e) => e.preventDefault());
    b.addEventListener("click", () => startEditing(w, entry));
    li.append(b);
    list.append(li);
  }
  renderHistoryMarks(w);
}

function renderHistoryMarks(w) {
  if (!w.els) return;
  for (const b of w.els.history.querySelectorAll(".lw-history-button")) {
    const [state, text] = entryState(w, b.__entry);
    b.dataset.state = state;
    b.querySelector(".lw-history-state").textContent = text;
  }
}

function fmt(n) {
  return Number(n).toLocaleString("en-US");
}

function renderStatus(w) {
  const s = w.status || {};
  const num = (v) => typeof v === "number" && Number.isFinite(v);
  const plural = (n, one, many) => `${fmt(n)} ${n === 1 ? one : many}`;
  const parts = [];
  if (num(s.left)) parts.push(`${plural(s.left, "image", "images")} left to label`);
  if (num(s.mine)) {
    parts.push(`your labels: ${num(s.mine_since) ? fmt(s.mine_since) + " this session, " : ""}`
      + `${fmt(s.mine)} in all`);
  }
  if (num(s.team)) parts.push(`labels by everyone: ${fmt(s.team)}`);
  if (num(s.pending) && num(s.batch)) {
    parts.push(`${fmt(s.pending)} of ${fmt(s.batch)} answers waiting to be submitted`);
  }
  if (s.model_version !== null && s.model_version !== undefined) {
    parts.push(`suggestions by model v${s.model_version}`);
  }
  if (num(s.flagged) && s.flagged) parts.push(`${plural(s.flagged, "image", "images")} flagged for the lead`);
  if (s.message) parts.push(String(s.message));
  w.els.server.textContent = parts.join(" · ");
}

function note(w, text) {
  if (!w.els) return;
  w.els.note.textContent = text;
  w.els.note.hidden = false;
  clearTimeout(w.noteTimer);
  w.noteTimer = setTimeout(() => { if (w.els) w.els.note.hidden = true; }, NOTE_MS);
}

function bindDom(w, parentElement) {
  const root = parentElement.querySelector(".lw-root");
  if (!root || root === w.root) return false;
  w.root = root;
  const q = (s) => root.querySelector(s);
  w.els = { root, stage: q(".lw-stage"), name: q(".lw-name"), suggestion: q(".lw-suggestion"),
            mark: q(".lw-mark"), classes: q(".lw-classes"), note: q(".lw-note"),
            saved: q(".lw-saved"), server: q(".lw-server"), filter: q(".lw-filter"),
            editing: q(".lw-editing"), history: q(".lw-history"),
            historyBox: q(".lw-history-box") };
  w.els.stage.addEventListener("click", () => w.els.stage.classList.toggle("lw-zoomed"));
  bindFilter(w);
  w.classesSignature = null;   // a new DOM needs its buttons drawn
  return true;
}

// ---------------------------------------------------------------- keys

function typingTarget(e) {
  let target = e.composedPath ? e.composedPath()[0] : e.target;
  if (!(target instanceof Element)) {
    target = document.activeElement;
    while (target && target.shadowRoot && target.shadowRoot.activeElement) {
      target = target.shadowRoot.activeElement;
    }
  }
  if (!target || !(target instanceof Element)) return null;
  if (target.isContentEditable) return target;
  const tag = target.tagName;
  if (tag === "TEXTAREA" || tag === "SELECT") return target;
  return tag === "INPUT" && !TYPING_INPUT_TYPES.has((target.type || "").toLowerCase()) ? target : null;
}

function keyAction(key) {
  if (key === "Enter") return { type: "confirm" };
  if (/^[0-9]$/.test(key)) {
    const index = key === "0" ? 9 : Number(key) - 1;
    return { type: "class", index, label: key };
  }
  const k = key.length === 1 ? key.toLowerCase() : key;
  if (k === "s" || k === "ArrowRight") return { type: "skip" };
  if (k === "f") return { type: "flag" };
  if (k === "u" || k === "ArrowLeft") return { type: "undo" };
  if (k === "b") return { type: "submit" };
  return null;
}

function installKeys(w) {
  if (w.onKey) return;
  w.onKey = (e) => {
    if (!w.root || !w.root.isConnected) return;
    const typing = typingTarget(e);
    if (typing) {
      // A one-line text box elsewhere on the page (naming yourself, a note) lets go of the
      // focus once its text is entered, so the next key labels instead of typing on.
      if ((e.key === "Enter" || e.key === "Escape") && typing.tagName === "INPUT"
          && !w.root.contains(typing)) {
        setTimeout(() => typing.blur(), 0);
      }
      return;
    }
    if (e.ctrlKey || e.altKey || e.metaKey) return;
    if (e.key === "/" && !w.els.filter.hidden) {
      e.preventDefault();
      e.stopPropagation();
      w.els.filter.focus();
      return;
    }
    if (e.key === "Escape") {
      if (w.editing) stopEditing(w);
      w.els.stage.classList.remove("lw-zoomed");
      return;
    }
    const act = keyAction(e.key);
    if (!act) return;
    // Ours, before anything else on the page sees it: a focused button would click on Enter, a
    // focused radio (the mode) would change on an arrow.
    e.preventDefault();
    e.stopPropagation();
    if (e.repeat) return; // a held key must not label a run of images
    perform(w, act);
  };
  window.addEventListener("keydown", w.onKey, true);   // capture: before the page's own handlers
}

function removeKeys(w) {
  if (w.onKey) window.removeEventListener("keydown", w.onKey, true);
  w.onKey = null;
}

// ---------------------------------------------------------------- entry point

export default function labelWidget(component) {
  const { data, parentElement, setStateValue } = component;
  const key = String((data && data.key) || component.key);
  const w = WIDGETS[key] || (WIDGETS[key] = newWidget(key));
  w.setStateValue = setStateValue;
  const fresh = bindDom(w, parentElement);
  if (!w.els) return undefined;

  let resend = false;
  if (data.storage_key && data.storage_key !== w.storageKey) {
    w.storageKey = String(data.storage_key);
    resend = restoreOutbox(w);
  }
  w.status = data.status || {};
  const classes = (data.classes || []).map(String);
  const signature = JSON.stringify(classes);
  if (signature !== w.classesSignature) {
    w.classes = classes;
    w.classesSignature = signature;
    renderClasses(w);
  }
  settle(w, data.acked, data.refused);
  if (!w.history.length && !w.outbox.length && (data.history || []).length) seedHistory(w, data.history);
  const moved = mergeItems(w, data.items || []);
  preload(w);
  if (moved || fresh || !w.els.stage.querySelector("img")) showCurrent(w);
  renderSaved(w);
  renderStatus(w);
  if (fresh) renderHistory(w);
  installKeys(w);
  if (fresh) w.haveSignature = null;   // a new mount's state starts empty on the server
  // A fresh server session knows nothing of answers typed before a reload: send them again.
  if (resend || (fresh && w.outbox.length)) send(w, true);
  else afterRedraw(w);

  // Streamlit calls only the last returned cleanup, on unmount, possibly after a new mount.
  const mounted = w.root;
  return () => {
    if (w.root !== mounted) return;
    removeKeys(w);
    w.root = null;
    w.els = null;
  };
}
