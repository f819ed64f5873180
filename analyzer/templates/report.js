/* tcpa report: timeline (one canvas), connection detail (ladder and time-sequence SVG).
   Capture strings only ever reach the page through textContent / attribute setters, never as markup. */
(function () {
  "use strict";
  const started = performance.now();
  const D = JSON.parse(document.getElementById("tcpa-data").textContent);
  const SVGNS = "http://www.w3.org/2000/svg";
  const FIN = 1, SYN = 2, RST = 4, PSH = 8, ACK = 16, URG = 32, ECE = 64, CWR = 128;
  const RETX = new Set(["retransmission", "fast_retransmission", "spurious_retransmission"]);
  const NORMAL = new Set(["four_way", "three_packet", "simultaneous"]);
  const COLOURS = { normal: "#2e9d4a", reset: "#d64541", half_closed: "#e0a020", open: "#f2cf6b", none: "#9aa0a6" };
  const SEV = { error: "#d64541", warning: "#b7791f", notice: "#1f6feb", info: "#667085" };

  const F = {}; D.conn_fields.forEach((n, i) => { F[n] = i; });
  const conns = D.conns, N = conns.length, S = D.strings;
  // Repeated text travels once, in D.strings; put the strings back where their indexes stand.
  const unintern = (v) => (v === null || v === undefined ? v : S[v]);
  const internedCols = D.interned.map((n) => F[n]);
  for (const row of conns) for (const k of internedCols) row[k] = unintern(row[k]);
  for (const k in D.transitions) for (const t of D.transitions[k]) { t[2] = S[t[2]]; t[3] = S[t[3]]; t[4] = S[t[4]]; }
  for (const k in D.events) for (const e of D.events[k]) e[2] = S[e[2]];
  const findings = D.findings.rows.map((r) => {
    const f = {};
    D.findings.fields.forEach((n, k) => { f[n] = D.findings.interned.indexOf(n) >= 0 ? unintern(r[k]) : r[k]; });
    return f;
  });
  const col = (i, name) => conns[i][F[name]];

  /* ---------- small helpers ---------- */
  function el(tag, attrs, text) {
    const e = document.createElement(tag);
    for (const k in attrs || {}) e.setAttribute(k, attrs[k]);
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function sv(tag, attrs, text) {
    const e = document.createElementNS(SVGNS, tag);
    for (const k in attrs || {}) e.setAttribute(k, attrs[k]);
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function group(n) { return String(n).replace(/\B(?=(\d{3})+(?!\d))/g, "\u202f"); }
  function fmtBytes(b) {
    if (b < 1000) return b + " B";
    const u = ["kB", "MB", "GB", "TB"]; let i = -1;
    do { b /= 1000; i++; } while (b >= 1000 && i < u.length - 1);
    return b.toFixed(1) + " " + u[i];
  }
  function fmtDur(us) {
    const a = Math.abs(us);
    if (a >= 1e6) return (us / 1e6).toFixed(a >= 1e8 ? 0 : 3) + " s";
    if (a >= 1e3) return (us / 1e3).toFixed(a >= 1e5 ? 0 : 1) + " ms";
    return Math.round(us) + " \u00b5s";
  }
  function endpoint(h, p) { return (String(h).indexOf(":") >= 0 ? "[" + h + "]" : h) + ":" + p; }
  function flagText(f) {
    let s = "";
    if (f & FIN) s += "F"; if (f & SYN) s += "S"; if (f & RST) s += "R"; if (f & PSH) s += "P";
    if (f & URG) s += "U"; if (f & ECE) s += "E"; if (f & CWR) s += "W";
    if (f & ACK) s += ".";
    return s || "none";
  }
  function outcome(i) {
    const c = col(i, "close");
    if (NORMAL.has(c)) return "normal";
    if (c === "reset" || c === "half_closed") return c;
    return col(i, "conn_state") === "S0" ? "none" : "open";
  }

  /* ---------- per-connection indexes ---------- */
  const findingsOf = new Map();
  findings.forEach((f) => f.conns.forEach((c) => {
    if (!findingsOf.has(c)) findingsOf.set(c, []);
    findingsOf.get(c).push(f);
  }));
  const eventKinds = new Map();
  for (const k in D.events) eventKinds.set(+k, new Set(D.events[k].map((e) => e[2])));
  const searchText = new Array(N);
  for (let i = 0; i < N; i++) {
    searchText[i] = (endpoint(col(i, "orig_h"), col(i, "orig_p")) + " " + endpoint(col(i, "resp_h"), col(i, "resp_p")) +
      " " + col(i, "uid")).toLowerCase();
  }

  /* ---------- filters ---------- */
  const fText = document.getElementById("f-text"), fOutcome = document.getElementById("f-outcome");
  const fFinding = document.getElementById("f-finding"), countEl = document.getElementById("shown-count");
  function addOptions(select, label, prefix, values) {
    if (!values.length) return;
    const g = el("optgroup", { label: label });
    values.forEach((v) => g.appendChild(el("option", { value: prefix + v }, v)));
    select.appendChild(g);
  }
  const distinct = (name) => Array.from(new Set(conns.map((r) => r[F[name]]))).sort();
  addOptions(fOutcome, "outcome (close)", "close:", distinct("close"));
  addOptions(fOutcome, "Zeek conn_state", "state:", distinct("conn_state"));
  addOptions(fOutcome, "client end state", "orig:", distinct("orig_state"));
  addOptions(fOutcome, "server end state", "resp:", distinct("resp_state"));
  addOptions(fFinding, "findings", "f:", Array.from(new Set(findings.filter((f) => f.conns.length).map((f) => String(f.kind)))).sort());
  const allEvents = new Set(); eventKinds.forEach((s) => s.forEach((k) => allEvents.add(k)));
  addOptions(fFinding, "segment events", "e:", Array.from(allEvents).sort());

  let shown = [];
  function matches(i, terms, oc, fk) {
    for (const t of terms) {
      if (/^\d+$/.test(t)) { if (String(col(i, "orig_p")) !== t && String(col(i, "resp_p")) !== t) return false; }
      else if (searchText[i].indexOf(t) < 0) return false;
    }
    if (oc) {
      const [kind, v] = [oc.slice(0, oc.indexOf(":")), oc.slice(oc.indexOf(":") + 1)];
      const name = { close: "close", state: "conn_state", orig: "orig_state", resp: "resp_state" }[kind];
      if (String(col(i, name)) !== v) return false;
    }
    if (fk) {
      const v = fk.slice(2);
      if (fk[0] === "f") { const fs = findingsOf.get(i); if (!fs || !fs.some((f) => String(f.kind) === v)) return false; }
      else { const ks = eventKinds.get(i); if (!ks || !ks.has(v)) return false; }
    }
    return true;
  }
  function applyFilter() {
    const terms = fText.value.trim().toLowerCase().split(/\s+/).filter(Boolean);
    const oc = fOutcome.value, fk = fFinding.value;
    shown = [];
    for (let i = 0; i < N; i++) if (matches(i, terms, oc, fk)) shown.push(i);
    countEl.textContent = group(shown.length) + " of " + group(N) + " connections shown";
    countEl.setAttribute("data-shown", String(shown.length));
    spacer.style.height = (AXIS_H + shown.length * ROW + 4) + "px";
    draw();
  }

  /* ---------- timeline (single canvas, virtual rows) ---------- */
  const scroller = document.getElementById("tl-scroll"), spacer = document.getElementById("tl-spacer");
  const canvas = document.getElementById("tl-canvas"), ctx = canvas.getContext("2d");
  const tip = document.getElementById("tl-tip");
  const ROW = 16, AXIS_H = 22, LABEL_W = 330;
  const span = Math.max(D.capture.span_us, 1);
  let v0 = -span * 0.01, v1 = span * 1.01, selected = -1, W = 0, H = 0;

  const xOf = (t) => LABEL_W + (t - v0) / (v1 - v0) * (W - LABEL_W - 8);
  const tOf = (x) => v0 + (x - LABEL_W) / (W - LABEL_W - 8) * (v1 - v0);
  function niceStep(range, n) {
    const raw = range / Math.max(n, 1), p = Math.pow(10, Math.floor(Math.log10(raw)));
    for (const m of [1, 2, 5, 10]) if (raw <= m * p) return m * p;
    return 10 * p;
  }
  function resize() {
    const dpr = window.devicePixelRatio || 1;
    W = scroller.clientWidth; H = scroller.clientHeight;
    canvas.width = Math.round(W * dpr); canvas.height = Math.round(H * dpr);
    canvas.style.width = W + "px"; canvas.style.height = H + "px";
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  }
  function draw() {
    if (!W) resize();
    const top = scroller.scrollTop;
    ctx.clearRect(0, 0, W, H);
    ctx.font = "11px ui-monospace, monospace"; ctx.textBaseline = "middle";
    const first = Math.max(0, Math.floor(top / ROW)), last = Math.min(shown.length, Math.ceil((top + H) / ROW) + 1);
    const step = niceStep(v1 - v0, (W - LABEL_W) / 110);
    ctx.strokeStyle = "#eef1f4"; ctx.lineWidth = 1;
    for (let t = Math.ceil(v0 / step) * step; t <= v1; t += step) {
      const x = Math.round(xOf(t)) + 0.5; ctx.beginPath(); ctx.moveTo(x, AXIS_H); ctx.lineTo(x, H); ctx.stroke();
    }
    ctx.save(); ctx.beginPath(); ctx.rect(0, AXIS_H, W, H - AXIS_H); ctx.clip();
    for (let r = first; r < last; r++) {
      const i = shown[r], y = AXIS_H + r * ROW - top;
      if (i === selected) { ctx.fillStyle = "#ddeeff"; ctx.fillRect(0, y, W, ROW); }
      else if (r % 2) { ctx.fillStyle = "#f8f9fa"; ctx.fillRect(0, y, LABEL_W, ROW); }
      ctx.fillStyle = "#1f2328";
      const label = endpoint(col(i, "orig_h"), col(i, "orig_p")) + " \u2192 " + endpoint(col(i, "resp_h"), col(i, "resp_p"));
      ctx.save(); ctx.beginPath(); ctx.rect(0, y, LABEL_W - 50, ROW); ctx.clip();
      ctx.fillText(label, 4, y + ROW / 2); ctx.restore();
      ctx.fillStyle = "#667085"; ctx.fillText(String(col(i, "conn_state")), LABEL_W - 46, y + ROW / 2);
      ctx.save(); ctx.beginPath(); ctx.rect(LABEL_W, y, W - LABEL_W, ROW); ctx.clip();
      const x0 = xOf(col(i, "t0")), x1 = Math.max(xOf(col(i, "t1")), x0 + 2);
      ctx.fillStyle = COLOURS[outcome(i)]; ctx.fillRect(x0, y + 3, x1 - x0, ROW - 6);
      const fs = findingsOf.get(i);
      if (fs) for (const f of fs) {
        if (f.t === null || f.t === undefined) continue;
        const x = xOf(f.t); ctx.fillStyle = SEV[f.severity] || "#000";
        ctx.beginPath(); ctx.moveTo(x - 5, y + 1); ctx.lineTo(x + 5, y + 1); ctx.lineTo(x, y + 9); ctx.closePath(); ctx.fill();
      }
      ctx.restore();
    }
    ctx.restore();
    ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, W, AXIS_H);
    ctx.strokeStyle = "#d0d7de"; ctx.beginPath(); ctx.moveTo(0, AXIS_H - 0.5); ctx.lineTo(W, AXIS_H - 0.5); ctx.stroke();
    ctx.fillStyle = "#667085";
    ctx.fillText(shown.length ? "time since capture start" : "no connection matches the filters", 4, AXIS_H / 2);
    for (let t = Math.ceil(v0 / step) * step; t <= v1; t += step) {
      const x = xOf(t); if (x < LABEL_W) continue;
      ctx.fillRect(x, AXIS_H - 5, 1, 5); ctx.fillText(fmtDur(t), x + 2, AXIS_H / 2 - 1);
    }
  }
  function rowAt(clientY) {
    const rect = canvas.getBoundingClientRect(), y = clientY - rect.top;
    if (y < AXIS_H) return -1;
    const r = Math.floor((y - AXIS_H + scroller.scrollTop) / ROW);
    return r >= 0 && r < shown.length ? shown[r] : -1;
  }
  function zoom(factor, atX) {
    const c = atX === undefined ? (v0 + v1) / 2 : tOf(atX);
    const width = Math.min(Math.max((v1 - v0) * factor, 1), span * 1.02 * 4);
    v0 = c - (c - v0) * width / (v1 - v0); v1 = v0 + width; draw();
  }
  function pan(fraction) { const d = (v1 - v0) * fraction; v0 += d; v1 += d; draw(); }
  let drag = null, dragged = false;
  canvas.addEventListener("mousedown", (e) => { drag = e.clientX; dragged = false; });
  window.addEventListener("mouseup", () => { drag = null; });
  canvas.addEventListener("mousemove", (e) => {
    if (drag !== null && Math.abs(e.clientX - drag) > 3) {
      const dt = (e.clientX - drag) / (W - LABEL_W - 8) * (v1 - v0);
      v0 -= dt; v1 -= dt; drag = e.clientX; dragged = true; tip.hidden = true; draw(); return;
    }
    const i = rowAt(e.clientY);
    if (i < 0) { tip.hidden = true; return; }
    const fs = findingsOf.get(i) || [];
    tip.textContent = col(i, "uid") + "  " + endpoint(col(i, "orig_h"), col(i, "orig_p")) + " \u2192 " +
      endpoint(col(i, "resp_h"), col(i, "resp_p")) + "\n" + col(i, "conn_state") + " / " + col(i, "close") +
      "  history " + col(i, "history") + "\nstart +" + fmtDur(col(i, "t0")) + ", lasted " + fmtDur(col(i, "t1") - col(i, "t0")) +
      (fs.length ? "\n" + fs.map((f) => "\u25bc " + f.severity + " " + f.kind + ": " + (f.summary || "")).join("\n") : "");
    tip.style.left = (e.clientX + 14) + "px"; tip.style.top = (e.clientY + 12) + "px"; tip.hidden = false;
  });
  canvas.addEventListener("mouseleave", () => { tip.hidden = true; });
  canvas.addEventListener("click", (e) => { if (dragged) return; const i = rowAt(e.clientY); if (i >= 0) openConn(i); });
  canvas.addEventListener("wheel", (e) => {
    if (!(e.ctrlKey || e.metaKey || e.altKey)) return;
    e.preventDefault(); zoom(e.deltaY > 0 ? 1.25 : 0.8, e.clientX - canvas.getBoundingClientRect().left);
  }, { passive: false });
  scroller.addEventListener("scroll", () => requestAnimationFrame(draw));
  window.addEventListener("resize", () => { resize(); draw(); });
  document.getElementById("z-in").addEventListener("click", () => zoom(0.5));
  document.getElementById("z-out").addEventListener("click", () => zoom(2));
  document.getElementById("z-left").addEventListener("click", () => pan(-0.25));
  document.getElementById("z-right").addEventListener("click", () => pan(0.25));
  document.getElementById("z-reset").addEventListener("click", () => { v0 = -span * 0.01; v1 = span * 1.01; draw(); });
  let pending = 0;
  const refilter = () => { clearTimeout(pending); pending = setTimeout(applyFilter, N > 5000 ? 120 : 0); };
  fText.addEventListener("input", refilter);
  fOutcome.addEventListener("change", applyFilter);
  fFinding.addEventListener("change", applyFilter);

  /* ---------- findings list (overview) ---------- */
  const flist = document.getElementById("findings-list");
  if (flist) {
    const LIMIT = 1000, t = el("table", { class: "flist" });
    const rank = { error: 0, warning: 1, notice: 2, info: 3 };
    const sorted = findings.slice().sort((a, b) => (rank[a.severity] ?? 9) - (rank[b.severity] ?? 9));
    sorted.slice(0, LIMIT).forEach((f) => {
      const tr = el("tr", f.conns.length ? { class: "link", title: "open " + (f.conns.length > 1 ? "the first of " + f.conns.length + " connections" : "the connection") } : {});
      tr.appendChild(el("td", { class: "sev-" + f.severity }, f.severity));
      tr.appendChild(el("td", {}, f.kind));
      const where = f.uid ? f.uid : [f.host, f.port].filter((v) => v !== null && v !== undefined && v !== "").join(":");
      tr.appendChild(el("td", {}, where));
      const s = el("td", {}, f.summary || ""); if (f.explanation) s.title = String(f.explanation);
      tr.appendChild(s);
      if (f.conns.length) tr.addEventListener("click", () => openConn(f.conns[0]));
      t.appendChild(tr);
    });
    flist.appendChild(t);
    if (sorted.length > LIMIT) flist.appendChild(el("p", { class: "muted" }, "First " + LIMIT + " of " + sorted.length + " findings listed."));
  }

  /* ---------- connection detail ---------- */
  const detail = document.getElementById("detail");
  let current = -1;
  const expanded = new Set();
  function openConn(i) {
    current = i; selected = i; expanded.clear(); draw();
    detail.hidden = false;
    document.getElementById("d-title").textContent = col(i, "uid") + "  " + endpoint(col(i, "orig_h"), col(i, "orig_p")) +
      " \u2192 " + endpoint(col(i, "resp_h"), col(i, "resp_p"));
    const facts = document.getElementById("d-facts"); facts.replaceChildren();
    const opts = (side) => [col(i, side + "_mss") !== null ? "mss " + col(i, side + "_mss") : "",
      col(i, side + "_wscale") !== null ? "ws " + col(i, side + "_wscale") : "", col(i, side + "_sack_perm") ? "sack_perm" : "",
      col(i, side + "_timestamps") ? "ts" : ""].filter(Boolean).join(", ") || "none";
    const rtt = col(i, "handshake_rtt_ms");
    [["conn_state", col(i, "conn_state")], ["close", col(i, "close")], ["history", col(i, "history")],
      ["duration", fmtDur(col(i, "t1") - col(i, "t0"))], ["handshake RTT", rtt === null ? "-" : rtt.toFixed(3) + " ms"],
      ["client", col(i, "orig_pkts") + " pkts, " + fmtBytes(col(i, "orig_bytes")) + ", ends " + col(i, "orig_state") + "; options: " + opts("orig")],
      ["server", col(i, "resp_pkts") + " pkts, " + fmtBytes(col(i, "resp_bytes")) + ", ends " + col(i, "resp_state") + "; options: " + opts("resp")],
      ["active closer", col(i, "active_closer") || "-"], ["reset by", col(i, "reset_by") || "-"]].forEach(([k, v]) => {
      const s = el("span"); s.appendChild(el("b", {}, k + ": ")); s.appendChild(document.createTextNode(String(v))); facts.appendChild(s);
    });
    const fd = document.getElementById("d-findings"); fd.replaceChildren();
    const fs = findingsOf.get(i) || [];
    fs.forEach((f) => {
      const box = el("div", { class: "card wide" });
      box.appendChild(el("h3", { class: "sev-" + f.severity }, f.severity + ": " + f.kind + (f.frames.length ? "  (frames " + f.frames.join(", ") + ")" : "")));
      for (const k of ["summary", "explanation", "causes", "remedy"]) {
        const v = f[k];
        if (v === null || v === undefined || v === "" || (Array.isArray(v) && !v.length)) continue;
        const p = el("p"); p.appendChild(el("b", {}, k + ": "));
        p.appendChild(document.createTextNode(Array.isArray(v) ? v.join("; ") : String(v))); box.appendChild(p);
      }
      fd.appendChild(box);
    });
    const segs = D.segments[i] || [], total = col(i, "orig_pkts") + col(i, "resp_pkts");
    const om = document.getElementById("d-omitted");
    om.hidden = segs.length >= total;
    om.textContent = "This connection has " + group(total) + " segments; the report embeds " + group(segs.length) +
      " of them (the first " + D.caps[0] + ", the last " + D.caps[1] + " and every segment with an event or a state change).";
    document.getElementById("d-dir").value = col(i, "orig_bytes") >= col(i, "resp_bytes") ? "0" : "1";
    drawLadder(); drawTsg();
    detail.scrollIntoView({ block: "start" });
  }
  document.getElementById("d-expand").addEventListener("change", drawLadder);
  document.getElementById("d-dir").addEventListener("change", drawTsg);

  function byFrame(list, key) {
    const m = new Map();
    (list || []).forEach((x) => { const k = key(x); if (!m.has(k)) m.set(k, []); m.get(k).push(x); });
    return m;
  }

  function drawLadder() {
    const i = current, segs = D.segments[i] || [], box = document.getElementById("ladder");
    const trs = D.transitions[i] || [], trAt = byFrame(trs, (t) => t[0]), evAt = byFrame(D.events[i], (e) => e[0]);
    const fAt = new Map();
    (findingsOf.get(i) || []).forEach((f) => f.frames.forEach((fr) => { if (!fAt.has(fr)) fAt.set(fr, []); fAt.get(fr).push(f); }));
    const noCollapse = document.getElementById("d-expand").checked;
    // Classify each segment; the ones worth seeing are never folded into a band.
    const info = segs.map((s) => {
      const tr = trAt.get(s[0]) || [], f = s[3];
      const hs = (f & SYN) !== 0 || tr.some((t) => t[2] === "SYN_RCVD" && t[3] === "ESTABLISHED");
      const cl = (f & (FIN | RST)) !== 0 || tr.some((t) => /FIN/.test(t[4]) || t[3] === "TIME_WAIT" || t[3] === "CLOSED");
      const keep = hs || cl || tr.length > 0 || evAt.has(s[0]) || fAt.has(s[0]) || (s[8] && s[8].gap);
      return { s: s, hs: hs, cl: cl, keep: keep };
    });
    const items = [];
    for (let k = 0; k < info.length;) {
      if (info[k].s[8] && info[k].s[8].gap) items.push({ gap: info[k].s[8].gap });
      if (info[k].keep || noCollapse) { items.push({ seg: info[k] }); k++; continue; }
      let e = k; while (e < info.length && !info[e].keep) e++;
      if (e - k >= 5 && !expanded.has(k)) items.push({ band: info.slice(k, e), key: k });
      else for (let j = k; j < e; j++) items.push({ seg: info[j] });
      k = e;
    }
    const LL = 250, LR = 730, XEV = 880, WIDTH = 1180, TOP = 54, RH = 30, BH = 26;
    const height = TOP + items.reduce((h, it) => h + (it.seg ? RH : BH), 0) + 40;
    const svg = sv("svg", { width: WIDTH, height: height, viewBox: "0 0 " + WIDTH + " " + height });
    svg.appendChild(sv("text", { x: LL, y: 16, "text-anchor": "middle", class: "head" }, "client " + endpoint(col(i, "orig_h"), col(i, "orig_p"))));
    svg.appendChild(sv("text", { x: LR, y: 16, "text-anchor": "middle", class: "head" }, "server " + endpoint(col(i, "resp_h"), col(i, "resp_p"))));
    svg.appendChild(sv("line", { x1: LL, y1: 24, x2: LL, y2: height - 10, class: "lane" }));
    svg.appendChild(sv("line", { x1: LR, y1: 24, x2: LR, y2: height - 10, class: "lane" }));
    const initial = (ep) => { const t = trs.find((x) => x[1] === ep); return t ? t[2] : (ep ? col(i, "resp_state") : col(i, "orig_state")); };
    svg.appendChild(sv("text", { x: LL - 8, y: 40, "text-anchor": "end", class: "state orig" }, initial(0)));
    svg.appendChild(sv("text", { x: LR + 8, y: 40, class: "state resp" }, initial(1)));
    let y = TOP;
    const base = segs.length ? segs[0][1] : 0;
    items.forEach((it) => {
      if (it.gap || it.band) {
        const [n, bytes, dur] = it.gap ? it.gap : [it.band.length, it.band.reduce((a, b) => a + b.s[6], 0),
          it.band[it.band.length - 1].s[1] - it.band[0].s[1]];
        const g = sv("g", { class: it.gap ? "band gap" : "band" });
        g.appendChild(sv("rect", { x: LL - 60, y: y + 3, width: LR - LL + 120, height: BH - 6, rx: 4 }));
        g.appendChild(sv("text", { x: (LL + LR) / 2, y: y + BH / 2 + 4, "text-anchor": "middle" },
          "\u2026 " + group(n) + " segments, " + fmtBytes(bytes) + ", " + fmtDur(dur) + (it.gap ? " (not embedded)" : " (click to expand)") + " \u2026"));
        if (it.band) g.addEventListener("click", () => { expanded.add(it.key); drawLadder(); });
        svg.appendChild(g); y += BH; return;
      }
      const s = it.seg.s, x = s[8] || {}, f = s[3], fromX = s[2] ? LR : LL, toX = s[2] ? LL : LR;
      const evs = evAt.get(s[0]) || [];
      const cls = ["seg", it.seg.hs ? "hs" : "", it.seg.cl ? "cl" : "", f & RST ? "rst" : "",
        evs.some((e) => RETX.has(e[2])) ? "ev" : ""].filter(Boolean).join(" ");
      const g = sv("g", { class: cls, "data-frame": s[0], "data-flags": flagText(f) });
      g.appendChild(sv("text", { x: 6, y: y + 12, class: "time" }, "#" + s[0] + "  +" + fmtDur(s[1] - base)));
      const y2 = y + 12, dx = toX > fromX ? -8 : 8;
      g.appendChild(sv("line", { x1: fromX, y1: y, x2: toX, y2: y2 }));
      g.appendChild(sv("polygon", { points: [toX, y2, toX + dx, y2 - 5, toX + dx, y2 + 3].join(",") }));
      const parts = [flagText(f), "seq=" + s[4]];
      if (f & ACK) parts.push("ack=" + s[5]);
      parts.push("len=" + s[6], "win=" + s[7]);
      if (x.mss !== undefined) parts.push("mss=" + x.mss);
      if (x.ws !== undefined) parts.push("ws=" + x.ws);
      if (x.sp) parts.push("sack_perm");
      if (x.ts) parts.push("ts=" + x.ts[0] + "/" + x.ts[1]);
      if (x.sack) parts.push("sack=" + x.sack[0] + "-" + x.sack[1] + (x.sack[2] > 1 ? "(+" + (x.sack[2] - 1) + ")" : ""));
      const lbl = sv("text", { x: (LL + LR) / 2, y: y + 2, "text-anchor": "middle", class: "lbl" }, parts.join(" "));
      g.appendChild(lbl);
      (trAt.get(s[0]) || []).forEach((t, n) => {
        const ly = (t[1] === s[2] ? y + 4 : y2 + 4) + 11 * n;  // the sender changes as it sends, the receiver on arrival
        const label = sv("text", t[1] ? { x: LR + 8, y: ly, class: "state resp" }
          : { x: LL - 8, y: ly, "text-anchor": "end", class: "state orig" }, t[3]);
        const hover = sv("g");  // the title sits beside the text so the label's textContent stays the state
        hover.appendChild(sv("title", {}, (t[1] ? "server " : "client ") + t[2] + " \u2192 " + t[3] + " on " + t[4]));
        hover.appendChild(label);
        g.appendChild(hover);
      });
      let ey = y + 6;
      evs.forEach((e) => {
        const t = sv("text", { x: XEV, y: ey, class: "evt" }, "\u25cf " + e[2] + (e[4] > 0 ? " (of #" + e[4] + ")" : ""));
        t.appendChild(sv("title", {}, e[2] + " value " + e[3])); g.appendChild(t); ey += 11;
      });
      (fAt.get(s[0]) || []).forEach((fd) => {
        const t = sv("text", { x: XEV, y: ey, class: "fnd" }, "\u2691 " + fd.kind);
        t.appendChild(sv("title", {}, String(fd.summary || ""))); g.appendChild(t); ey += 11;
      });
      svg.appendChild(g); y += RH;
    });
    if (!segs.length) svg.appendChild(sv("text", { x: (LL + LR) / 2, y: TOP + 10, "text-anchor": "middle" }, "no segments embedded"));
    box.replaceChildren(svg);
  }

  function drawTsg() {
    const i = current, d = +document.getElementById("d-dir").value, segs = D.segments[i] || [];
    const box = document.getElementById("tsg");
    const retx = new Set((D.events[i] || []).filter((e) => e[1] === d && RETX.has(e[2])).map((e) => e[0]));
    const peer = d ? "orig" : "resp", me = d ? "resp" : "orig";
    const scale = col(i, peer + "_wscale") !== null && col(i, me + "_wscale") !== null ? col(i, peer + "_wscale") : 0;
    const data = [], acks = [], wins = [], sacks = [];
    let broken = false;  // segments left out before this one: the ACK and window lines restart after the gap
    segs.forEach((s) => {
      if (s[8] && s[8].gap) broken = true;
      if (s[2] === d) {
        const n = s[6] + ((s[3] & (SYN | FIN)) ? 1 : 0);
        if (n > 0) data.push([s[1], s[4], s[4] + n, retx.has(s[0])]);
      } else if (s[3] & ACK) {
        acks.push([s[1], s[5], broken]);
        wins.push([s[1], s[5] + s[7] * Math.pow(2, (s[3] & SYN) ? 0 : scale), broken]);
        broken = false;
        if (s[8] && s[8].sack) sacks.push([s[1], s[8].sack[0], s[8].sack[1]]);
      }
    });
    const WIDTH = 1000, HEIGHT = 380, ML = 84, MR = 16, MT = 12, MB = 34;
    const svg = sv("svg", { width: WIDTH, height: HEIGHT, viewBox: "0 0 " + WIDTH + " " + HEIGHT });
    const ts = segs.map((s) => s[1]);
    const ys = [].concat(data.map((p) => p[1]), data.map((p) => p[2]), acks.map((p) => p[1]));
    if (!data.length && !acks.length) {
      svg.appendChild(sv("text", { x: WIDTH / 2, y: HEIGHT / 2, "text-anchor": "middle" }, "no data or ACKs in this direction"));
      box.replaceChildren(svg); return;
    }
    let t0 = Math.min(...ts), t1 = Math.max(...ts), y0 = Math.min(...ys), y1 = Math.max(...ys);
    // The window line may sit far above the data: show it only up to half the data's range higher (clipped).
    const wmax = wins.length ? Math.max(...wins.map((p) => p[1])) : y1;
    y1 = Math.max(y1, Math.min(wmax, y1 + (y1 - y0) * 0.5));
    if (t1 === t0) t1 = t0 + 1; if (y1 === y0) y1 = y0 + 1;
    const X = (t) => ML + (t - t0) / (t1 - t0) * (WIDTH - ML - MR), Y = (v) => HEIGHT - MB - (v - y0) / (y1 - y0) * (HEIGHT - MT - MB);
    const axis = sv("g", { class: "axis" });
    const xs = niceStep(t1 - t0, 8), yst = niceStep(y1 - y0, 6);
    for (let t = Math.ceil(t0 / xs) * xs; t <= t1; t += xs) {
      axis.appendChild(sv("line", { x1: X(t), y1: MT, x2: X(t), y2: HEIGHT - MB }));
      axis.appendChild(sv("text", { x: X(t), y: HEIGHT - MB + 14, "text-anchor": "middle" }, fmtDur(t - t0)));
    }
    for (let v = Math.ceil(y0 / yst) * yst; v <= y1; v += yst) {
      axis.appendChild(sv("line", { x1: ML, y1: Y(v), x2: WIDTH - MR, y2: Y(v) }));
      axis.appendChild(sv("text", { x: ML - 4, y: Y(v) + 4, "text-anchor": "end" }, group(v)));
    }
    axis.appendChild(sv("text", { x: ML, y: HEIGHT - 4 }, "time since the connection's first segment; y: relative sequence number"));
    svg.appendChild(axis);
    const clip = sv("clipPath", { id: "tsg-clip" });
    clip.appendChild(sv("rect", { x: ML, y: MT - 4, width: WIDTH - ML - MR, height: HEIGHT - MT - MB + 8 }));
    svg.appendChild(sv("defs")).appendChild(clip);
    const step = (pts, colour, cls) => {
      if (!pts.length) return;
      let p = "M" + X(pts[0][0]) + "," + Y(pts[0][1]);
      for (let k = 1; k < pts.length; k++) {
        p += pts[k][2] ? "M" + X(pts[k][0]) + "," + Y(pts[k][1]) : "H" + X(pts[k][0]) + "V" + Y(pts[k][1]);
      }
      p += "H" + X(t1);
      svg.appendChild(sv("path", { d: p, fill: "none", stroke: colour, "stroke-width": 1.5, class: cls, "clip-path": "url(#tsg-clip)" }));
    };
    step(wins, "#d4a72c", "win"); step(acks, "#2e9d4a", "ack");
    sacks.forEach((s) => svg.appendChild(sv("line", { x1: X(s[0]) + 2, y1: Y(s[1]), x2: X(s[0]) + 2, y2: Y(s[2]), stroke: "#8250df", "stroke-width": 3, class: "sackb" })));
    data.forEach((p) => {
      const x = X(p[0]), colour = p[3] ? "#d64541" : "#1f2328", g = sv("g", { class: p[3] ? "data retx" : "data" });
      g.appendChild(sv("line", { x1: x, y1: Y(p[1]), x2: x, y2: Math.min(Y(p[2]), Y(p[1]) - 1), stroke: colour, "stroke-width": 1.5 }));
      g.appendChild(sv("line", { x1: x - 2, y1: Y(p[2]), x2: x + 2, y2: Y(p[2]), stroke: colour }));
      if (p[3]) g.appendChild(sv("text", { x: x + 3, y: Y(p[2]) - 2, fill: colour }, "R"));
      svg.appendChild(g);
    });
    box.replaceChildren(svg);
  }

  /* ---------- start ---------- */
  window.__tcpa = {
    open: openConn,
    shown: () => shown.length,
    indexOf: (uid) => conns.findIndex((r) => r[F.uid] === uid),
    // Scroll a shown connection's row into view and return its centre in client coordinates (for tests).
    rowCenter: (uid) => {
      const i = conns.findIndex((r) => r[F.uid] === uid), r = shown.indexOf(i);
      if (r < 0) return null;
      scroller.scrollIntoView({ block: "center" });
      scroller.scrollTop = Math.max(0, r * ROW - 40); draw();
      const rect = canvas.getBoundingClientRect();
      return { x: rect.left + LABEL_W / 2, y: rect.top + AXIS_H + r * ROW - scroller.scrollTop + ROW / 2 };
    },
  };
  resize();
  applyFilter();
  window.__tcpaTimings = { script_ms: performance.now() - started, since_navigation_ms: performance.now() };
  window.__tcpaReady = true;
  document.documentElement.setAttribute("data-ready", "1");
})();
