// Juicer's labeling widget (Streamlit components v2): holds the leased images in the browser and
// handles keys itself, so the picture on screen and the answer a key makes are decided in the same
// event handler. Python tops up the window and acknowledges answers; it never drives the display.

// Module state lives on window, keyed by the Python key, so it survives re-renders and remounts.
const WIDGETS = (window.__juicerLabelWidget = window.__juicerLabelWidget || {});
const NOTE_MS = 2500;
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
    queue: [],                  // queue[0] is the item on screen
    done: new Set(),            // image ids answered or skipped here (and not undone)
    history: [],                // answered/skipped items, newest last, for undo
    outbox: [],                 // answers the server has not acknowledged
    settledUids: new Set(),     // uids acknowledged or refused
    saved: 0,
    refused: 0,
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

function send(w) {
  if (w.setStateValue) w.setStateValue("answers", w.outbox.map((a) => ({ ...a })));
}

function restoreOutbox(w) {
  const known = new Set(w.outbox.map((a) => a.uid));
  const restored = readStored(w).filter((a) => !known.has(a.uid) && !w.settledUids.has(a.uid));
  if (!restored.length) return false;
  restored.sort((a, b) => (a.t || 0) - (b.t || 0));
  for (const a of restored) {
    w.outbox.push(a);
    if (a.action === "answer" || a.action === "skip") w.done.add(a.image_id);
    else if (a.action === "undo") w.done.delete(a.image_id);
  }
  return true;
}

function settle(w, acked, refused) {
  let changed = false;
  const settleOne = (uid) => {
    if (w.settledUids.has(uid)) return false;
    w.settledUids.add(uid);
    const i = w.outbox.findIndex((a) => a.uid === uid);
    if (i >= 0) w.outbox.splice(i, 1);
    changed = true;
    return i >= 0;
  };
  for (const uid of acked || []) if (settleOne(String(uid))) w.saved += 1;
  for (const [uid, reason] of Object.entries(refused || {})) {
    if (settleOne(String(uid))) {
      w.refused += 1;
      note(w, "not saved: " + String(reason));
    }
  }
  if (changed) persist(w);
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

// One function for keys and clicks: read the item on screen, tag the answer with it, and move
// the display on before returning, so the next key sees the next image.
function perform(w, act) {
  const item = w.queue[0] || null;
  if (act.type === "undo") return undo(w);
  if (act.type === "submit") {
    record(w, makeAnswer(item, "submit", null));
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
  } else {
    action = "skip";
  }
  const answer = makeAnswer(item, action, cls);
  w.queue.shift();
  item.restored = false;
  w.done.add(item.image_id);
  w.history.push(item);
  showCurrent(w);
  record(w, answer);
}

function undo(w) {
  const item = w.history.pop();
  if (!item) {
    note(w, "nothing to undo");
    return;
  }
  w.done.delete(item.image_id);
  item.restored = true;   // keep it on screen even if the server's window does not list it yet
  w.queue = [item].concat(w.queue.filter((x) => x.image_id !== item.image_id));
  showCurrent(w);
  record(w, makeAnswer(item, "undo", null));
}

// ---------------------------------------------------------------- merging Python's window

function mergeItems(w, incoming) {
  const fresh = new Map();
  for (const it of incoming) fresh.set(it.image_id, it);
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
  for (const it of incoming) {
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
  let img = w.images.get(item.image_id);
  if (img && img.__src === item.src) return img;
  img = new Image();
  img.__src = item.src;
  img.className = "lw-img";
  img.alt = String(item.name ?? "");
  img.draggable = false;
  img.src = item.src;
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
  for (const item of w.history.slice(-10)) wanted.add(item.image_id);
  for (const id of Array.from(w.images.keys())) if (!wanted.has(id)) w.images.delete(id);
}

function showCurrent(w) {
  const els = w.els;
  if (!els) return;
  const item = w.queue[0] || null;
  els.root.dataset.imageId = item ? String(item.image_id) : "";
  els.root.dataset.suggestion = suggestionShown(item) ? String(item.suggestion) : "";
  els.root.dataset.modelVersion = suggestionShown(item) ? String(item.model_version ?? "") : "";
  if (!item) {
    els.stage.replaceChildren(el("div", "lw-waiting", "Waiting for more images..."));
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
    const label = keyLabel(index);
    if (label) b.append(el("kbd", "lw-key", label));
    b.append(el("span", "lw-class-name", cls));
    b.addEventListener("mousedown", (e) => e.preventDefault());
    b.addEventListener("click", () => perform(w, { type: "class", index, label: label || cls }));
    box.append(b);
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
}

function renderStatus(w) {
  const parts = [];
  for (const [k, v] of Object.entries(w.status || {})) {
    if (k === "message" || v === null || v === undefined) continue;
    parts.push(`${k}: ${typeof v === "object" ? JSON.stringify(v) : String(v)}`);
  }
  if (w.status && w.status.message) parts.push(String(w.status.message));
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
            saved: q(".lw-saved"), server: q(".lw-server") };
  w.classesSignature = null;   // a new DOM needs its buttons drawn
  return true;
}

// ---------------------------------------------------------------- keys

function isTyping(e) {
  let target = e.composedPath ? e.composedPath()[0] : e.target;
  if (!(target instanceof Element)) {
    target = document.activeElement;
    while (target && target.shadowRoot && target.shadowRoot.activeElement) {
      target = target.shadowRoot.activeElement;
    }
  }
  if (!target || !(target instanceof Element)) return false;
  if (target.isContentEditable) return true;
  const tag = target.tagName;
  if (tag === "TEXTAREA" || tag === "SELECT") return true;
  return tag === "INPUT" && !TYPING_INPUT_TYPES.has((target.type || "").toLowerCase());
}

function keyAction(key) {
  if (key === "Enter") return { type: "confirm" };
  if (/^[0-9]$/.test(key)) {
    const index = key === "0" ? 9 : Number(key) - 1;
    return { type: "class", index, label: key };
  }
  const k = key.length === 1 ? key.toLowerCase() : key;
  if (k === "s" || k === "ArrowRight") return { type: "skip" };
  if (k === "u" || k === "ArrowLeft") return { type: "undo" };
  if (k === "b") return { type: "submit" };
  return null;
}

function installKeys(w) {
  if (w.onKey) return;
  w.onKey = (e) => {
    if (!w.root || !w.root.isConnected) return;
    if (e.ctrlKey || e.altKey || e.metaKey || isTyping(e)) return;
    const act = keyAction(e.key);
    if (!act) return;
    e.preventDefault();   // also stops a focused button elsewhere from clicking on Enter
    if (e.repeat) return; // a held key must not label a run of images
    perform(w, act);
  };
  document.addEventListener("keydown", w.onKey);
}

function removeKeys(w) {
  if (w.onKey) document.removeEventListener("keydown", w.onKey);
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
  const moved = mergeItems(w, data.items || []);
  preload(w);
  if (moved || fresh) showCurrent(w);
  renderSaved(w);
  renderStatus(w);
  installKeys(w);
  // A fresh server session knows nothing of answers typed before a reload: send them again.
  if (resend || (fresh && w.outbox.length)) send(w);

  // Streamlit calls only the last returned cleanup, on unmount, possibly after a new mount.
  const mounted = w.root;
  return () => {
    if (w.root !== mounted) return;
    removeKeys(w);
    w.root = null;
    w.els = null;
  };
}
