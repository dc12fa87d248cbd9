// Juicer's grid widget (Streamlit components v2): thumbnails the model puts in one class; arrows
// move, Space (or a click) marks the one in focus as wrong, Enter confirms the rest. The browser
// sends back exactly the images it showed, so a confirm never covers an image nobody saw.

const GRIDS = (window.__juicerGridWidget = window.__juicerGridWidget || {});
const TYPING_INPUT_TYPES = new Set(["checkbox", "radio", "button", "submit", "reset", "range",
                                    "color", "file", "image"]);

function typing(e) {
  const t = e.composedPath ? e.composedPath()[0] : e.target;
  if (!(t instanceof Element)) return false;
  if (t.isContentEditable || t.tagName === "TEXTAREA" || t.tagName === "SELECT") return true;
  return t.tagName === "INPUT" && !TYPING_INPUT_TYPES.has((t.type || "").toLowerCase());
}

function columns(g) {
  const cells = g.root.querySelectorAll(".lg-cell");
  if (cells.length < 2) return 1;
  const top = cells[0].offsetTop;
  let n = 0;
  for (const c of cells) { if (c.offsetTop !== top) break; n += 1; }
  return Math.max(1, n);
}

function draw(g) {
  const grid = g.root.querySelector(".lg-grid");
  grid.replaceChildren();
  g.items.forEach((item, index) => {
    const cell = document.createElement("button");
    cell.type = "button";
    cell.tabIndex = -1;
    cell.className = "lg-cell";
    cell.dataset.imageId = String(item.image_id);
    const img = document.createElement("img");
    img.src = item.src;
    img.alt = String(item.name || "");
    img.draggable = false;
    const caption = document.createElement("span");
    caption.className = "lg-caption";
    caption.textContent = `${Math.round(100 * (item.confidence || 0))}% · ${item.name || ""}`;
    cell.append(img, caption);
    cell.addEventListener("mousedown", (e) => e.preventDefault());
    cell.addEventListener("click", () => { g.focus = index; toggle(g); });
    grid.append(cell);
  });
  mark(g);
}

function mark(g) {
  const cells = g.root.querySelectorAll(".lg-cell");
  cells.forEach((cell, index) => {
    const id = g.items[index].image_id;
    cell.classList.toggle("lg-wrong", g.wrong.has(id));
    cell.classList.toggle("lg-focus", index === g.focus);
    cell.setAttribute("aria-pressed", g.wrong.has(id) ? "true" : "false");
  });
  const n = g.items.length - g.wrong.size;
  g.root.querySelector(".lg-confirm").textContent =
    `Confirm ${n} as ${g.className} (Enter)` + (g.wrong.size ? ` · ${g.wrong.size} marked wrong` : "");
  g.root.dataset.wrong = Array.from(g.wrong).sort((a, b) => a - b).join(",");
  g.root.dataset.focus = g.items[g.focus] ? String(g.items[g.focus].image_id) : "";
}

function toggle(g) {
  const item = g.items[g.focus];
  if (!item) return;
  if (g.wrong.has(item.image_id)) g.wrong.delete(item.image_id); else g.wrong.add(item.image_id);
  mark(g);
}

function confirm(g) {
  if (!g.items.length || !g.setTriggerValue) return;
  g.setTriggerValue("confirm", { class: g.className, shown: g.items.map((i) => i.image_id),
                                 wrong: Array.from(g.wrong) });
  g.root.querySelector(".lg-confirm").textContent = "Confirming…";
  g.items = [];
  g.wrong = new Set();
  g.signature = null;   // whatever the server draws next is drawn
}

export default function gridWidget({ data, parentElement, setTriggerValue, key }) {
  const id = String((data && data.key) || key);
  const g = GRIDS[id] || (GRIDS[id] = { wrong: new Set(), focus: 0, items: [], signature: null });
  g.root = parentElement.querySelector(".lg-root");
  g.setTriggerValue = setTriggerValue;
  const signature = JSON.stringify([data.class, (data.items || []).map((i) => i.image_id)]);
  if (signature !== g.signature || !g.root.querySelector(".lg-cell")) {
    if (signature !== g.signature) { g.wrong = new Set(); g.focus = 0; }
    g.signature = signature;
    g.items = data.items || [];
    g.className = String(data.class || "");
    draw(g);
  }
  g.root.querySelector(".lg-confirm").onclick = () => confirm(g);
  if (g.onKey) window.removeEventListener("keydown", g.onKey, true);
  g.onKey = (e) => {
    if (!g.root || !g.root.isConnected || typing(e) || e.ctrlKey || e.altKey || e.metaKey) return;
    const n = g.items.length;
    const step = { ArrowRight: 1, ArrowLeft: -1, ArrowDown: columns(g), ArrowUp: -columns(g) }[e.key];
    // Ours before the page's own handlers (capture): a focused radio would take the arrows.
    if (step !== undefined && n) {
      e.preventDefault();
      e.stopPropagation();
      g.focus = Math.min(n - 1, Math.max(0, g.focus + step));
      mark(g);
    } else if (e.key === " ") {
      e.preventDefault();
      e.stopPropagation();
      if (!e.repeat) toggle(g);
    } else if (e.key === "Enter") {
      e.preventDefault();
      e.stopPropagation();
      if (!e.repeat) confirm(g);
    }
  };
  window.addEventListener("keydown", g.onKey, true);
  const root = g.root;
  return () => {
    if (g.root !== root) return;
    window.removeEventListener("keydown", g.onKey, true);
    g.onKey = null;
  };
}
