// The status page: one HTML file, one stylesheet, one script, embedded so that the controller
// binary is the whole installation (no CDN, no build toolchain). The script builds the DOM with
// textContent only (nothing from the fleet is ever parsed as HTML).
#include "controller/http/assets.h"

namespace upkeep::controller {

const char kIndexHtml[] = R"HTML(<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>upkeep</title>
<link rel="stylesheet" href="app.css">
</head>
<body>
<header>
  <h1>upkeep</h1>
  <span id="summary" class="muted">loading…</span>
  <span id="live" class="pill unknown" title="live updates">connecting</span>
</header>
<main>
  <section id="stacks" aria-label="stacks"></section>
  <section>
    <h2>Hosts</h2>
    <div class="scroll"><table id="hosts"><thead><tr><th>Host</th><th>Agent</th><th>Last heard</th><th>Version</th><th>Stacks</th></tr></thead><tbody></tbody></table></div>
  </section>
  <section>
    <h2>Events</h2>
    <ol id="events" class="events"></ol>
  </section>
</main>
<footer class="muted">read-only · updates live · <a href="metrics">metrics</a></footer>
<script src="app.js"></script>
</body>
</html>
)HTML";

const char kAppCss[] =
    R"CSS(:root{--bg:#f6f7f9;--fg:#1b1f24;--muted:#667085;--card:#fff;--line:#e3e6ea;
--ok:#12805c;--bad:#c4320a;--warn:#b54708;--unk:#667085}
@media (prefers-color-scheme:dark){:root{--bg:#111418;--fg:#e6e8eb;--muted:#98a2b3;--card:#1a1e24;--line:#2b3139}}
*{box-sizing:border-box}body{margin:0;font:15px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;background:var(--bg);color:var(--fg)}
header{display:flex;gap:.75rem;align-items:center;flex-wrap:wrap;padding:.75rem 1rem;border-bottom:1px solid var(--line);background:var(--card);position:sticky;top:0;z-index:1}
h1{font-size:1.15rem;margin:0}h2{font-size:1rem;margin:1.25rem 0 .5rem}h3{font-size:1rem;margin:0}
main{padding:0 1rem 1rem;max-width:1100px;margin:0 auto}footer{padding:1rem;text-align:center}
.muted{color:var(--muted)}.pill{display:inline-block;padding:.1rem .55rem;border-radius:999px;font-size:.8rem;font-weight:600;color:#fff;background:var(--unk)}
.pill.healthy{background:var(--ok)}.pill.degraded{background:var(--bad)}.pill.repairing{background:var(--warn)}.pill.unknown{background:var(--unk)}
#stacks{display:grid;grid-template-columns:repeat(auto-fill,minmax(320px,1fr));gap:.75rem;margin-top:1rem}
.card{background:var(--card);border:1px solid var(--line);border-left:5px solid var(--unk);border-radius:8px;padding:.75rem}
.card.healthy{border-left-color:var(--ok)}.card.degraded{border-left-color:var(--bad)}.card.repairing{border-left-color:var(--warn)}
.row{display:flex;justify-content:space-between;gap:.5rem;align-items:center;flex-wrap:wrap}
.finding{margin:.4rem 0;padding:.4rem .5rem;border-radius:6px;background:rgba(196,50,10,.08)}
.finding code,.path code{font-size:.8rem;word-break:break-all}
details{margin-top:.4rem}summary{cursor:pointer;color:var(--muted)}
.path{margin:.3rem 0 0;padding:0;list-style:none;font-size:.85rem}.path li{margin:.15rem 0}
.ev{font-size:.8rem;color:var(--muted);margin-left:1rem}
ul.small,ol.events{padding-left:1.1rem;font-size:.85rem;margin:.3rem 0}ol.events li{margin:.15rem 0}
.Warning{color:var(--bad)}table{border-collapse:collapse;width:100%;background:var(--card);font-size:.9rem}
th,td{text-align:left;padding:.35rem .5rem;border-bottom:1px solid var(--line)}.scroll{overflow-x:auto}
a{color:inherit}
)CSS";

const char kAppJs[] = R"JS('use strict';
(function () {
  const $ = (id) => document.getElementById(id);
  // Builds an element; children are nodes or strings (set as text, never as HTML).
  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v !== undefined && v !== null) e.setAttribute(k, v);
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined || c === false) continue;
      e.appendChild(typeof c === 'string' || typeof c === 'number' ? document.createTextNode(String(c)) : c);
    }
    return e;
  }
  function ago(ts) {
    if (!ts) return '-';
    const s = Math.max(0, Math.round((Date.now() - Date.parse(ts)) / 1000));
    if (s < 120) return s + 's ago';
    if (s < 7200) return Math.round(s / 60) + 'm ago';
    return Math.round(s / 3600) + 'h ago';
  }
  const short = (v, p) => (v || '').replace(p, '').toLowerCase();
  // healthy | degraded | repairing | unknown, from the Ready condition and the verdicts.
  function stateOf(stack) {
    const st = stack.status || {};
    const ready = (st.conditions || []).find((c) => c.type === 'Ready');
    if (ready && ready.status === 'True') return 'healthy';
    const verdicts = (st.diagnoses || []).map((d) => d.verdict);
    if (verdicts.includes('VERDICT_DEGRADED')) return 'degraded';
    if (verdicts.includes('VERDICT_REPAIRING') || verdicts.includes('VERDICT_WAITING')) return 'repairing';
    if (ready && ready.status === 'False') return 'degraded';
    return 'unknown';
  }
  const history = {};  // stack -> states shown, in order (window.upkeepHistory, for tests)
  window.upkeepHistory = history;
  window.upkeepLoadedAt = window.upkeepLoadedAt || Date.now();
  function evidence(ev) {
    const keys = Object.keys(ev || {});
    if (!keys.length) return null;
    return el('ul', { class: 'small' }, keys.map((k) => el('li', {}, k + ': ', el('code', {}, ev[k]))));
  }
  function diagnosisView(d) {
    const findings = (d.findings || []).map((f) =>
      el('div', { class: 'finding', 'data-code': f.code },
        el('strong', {}, f.code), ' ', f.target ? '[' + f.target + '] ' : '', f.message || '',
        evidence(f.evidence)));
    const path = el('ol', { class: 'path' }, (d.path || []).map((n) =>
      el('li', { style: null },
        '\u00a0'.repeat(2 * (n.depth || 0)), el('code', {}, n.step), n.target ? ' [' + n.target + ']' : '', ' → ', n.decision || '',
        Object.keys(n.evidence || {}).map((k) => el('div', { class: 'ev' }, k + ': ', el('code', {}, n.evidence[k]))))));
    return el('div', { class: 'diagnosis', 'data-host': d.host },
      el('div', { class: 'row' }, el('span', {}, 'host ', el('strong', {}, d.host || '-')),
        el('span', { class: 'muted' }, short(d.verdict, 'VERDICT_'), ' · ', ago(d.at))),
      el('div', {}, d.summary || ''),
      findings,
      el('details', {}, el('summary', {}, 'decision path (' + (d.path || []).length + ' steps)'), path));
  }
  function stackCard(s, actions, events) {
    const name = s.metadata.name;
    const state = stateOf(s);
    const h = history[name] || (history[name] = []);
    if (h[h.length - 1] !== state) h.push(state);
    const conds = (s.status.conditions || []).map((c) =>
      el('li', {}, c.type + '=' + c.status, c.reason ? ' (' + c.reason + (c.message ? ': ' + c.message : '') + ')' : ''));
    const mine = actions.filter((a) => a.action && a.action.stack === name).slice(-5).reverse();
    const evs = events.filter((e) => e.stack === name).slice(-6).reverse();
    return el('article', { class: 'card ' + state, 'data-stack': name, 'data-state': state },
      el('div', { class: 'row' }, el('h3', {}, name),
        el('span', { class: 'pill ' + state, 'data-role': 'state' }, state),
        s.status.paused ? el('span', { class: 'pill unknown' }, 'paused') : null),
      el('div', { class: 'muted' }, 'hosts: ' + (s.spec.hosts || []).join(', ')),
      el('ul', { class: 'small' }, conds),
      (s.status.diagnoses || []).map(diagnosisView),
      mine.length ? el('details', { open: '' }, el('summary', {}, 'recent actions'),
        el('ul', { class: 'small' }, mine.map((a) => el('li', {},
          short(a.action.kind, 'ACTION_KIND_'), ' ', a.action.target, ' — ',
          a.dryRun ? 'dry-run' : (a.result && a.result.id ? short(a.result.outcome, 'ACTION_OUTCOME_') : 'pending'),
          ' · ', ago(a.requestedAt))))) : null,
      evs.length ? el('details', {}, el('summary', {}, 'recent events'),
        el('ul', { class: 'small' }, evs.map((e) => el('li', { class: e.type }, e.reason, ': ', e.message, ' · ', ago(e.at))))) : null);
  }
  function render(st) {
    const stacks = st.stacks || [];
    const counts = {};
    const box = $('stacks');
    box.replaceChildren(...stacks.map((s) => {
      const card = stackCard(s, st.actions || [], st.events || []);
      counts[card.dataset.state] = (counts[card.dataset.state] || 0) + 1;
      return card;
    }));
    if (!stacks.length) box.replaceChildren(el('p', { class: 'muted' }, 'no stacks applied yet'));
    $('summary').textContent = stacks.length + ' stacks · ' + Object.entries(counts).map(([k, v]) => v + ' ' + k).join(' · ') +
      ' · ' + (st.hosts || []).filter((h) => h.connected).length + '/' + (st.hosts || []).length + ' agents';
    $('hosts').tBodies[0].replaceChildren(...(st.hosts || []).map((h) => el('tr', { 'data-host': h.hostId },
      el('td', {}, h.hostId), el('td', {}, el('span', { class: 'pill ' + (h.connected ? 'healthy' : 'degraded') }, h.connected ? 'connected' : 'away')),
      el('td', {}, ago(h.lastHeard)), el('td', {}, h.version || '-'), el('td', {}, (h.stacks || []).join(', ')))));
    $('events').replaceChildren(...(st.events || []).slice(-30).reverse().map((e) =>
      el('li', { class: e.type }, new Date(Date.parse(e.at)).toLocaleTimeString(), ' ', e.reason, ' ',
        e.stack ? e.stack + (e.host ? '@' + e.host : '') : '', e.target ? ' ' + e.target : '', ': ', e.message)));
  }
  let inflight = false, again = false;
  async function refresh() {
    if (inflight) { again = true; return; }
    inflight = true;
    try {
      const r = await fetch('api/state', { cache: 'no-store', credentials: 'same-origin' });
      if (r.ok) render(await r.json());
      else $('summary').textContent = 'HTTP ' + r.status + ': ' + (await r.text());
    } catch (e) {
      $('summary').textContent = 'controller unreachable';
    } finally {
      inflight = false;
      if (again) { again = false; setTimeout(refresh, 50); }
    }
  }
  let timer = null;
  function soon() { if (!timer) timer = setTimeout(() => { timer = null; refresh(); }, 100); }
  function live() {
    const es = new EventSource('api/events');
    const pill = $('live');
    es.onopen = () => { pill.className = 'pill healthy'; pill.textContent = 'live'; soon(); };
    es.onerror = () => { pill.className = 'pill repairing'; pill.textContent = 'reconnecting'; };
    es.addEventListener('upkeep', soon);
  }
  refresh();
  live();
  setInterval(refresh, 15000);  // ages, and a safety net should a stream stall
})();
)JS";

}  // namespace upkeep::controller
