// The dashboard: apps and instances from /api/stats, events from /api/events, the selected
// app's logs from /api/apps/{app}/logs (all server-sent events), its last hour from
// /api/apps/{app}/history. No framework: a few hundred lines of DOM.
'use strict';

const csrf = document.querySelector('meta[name="csrf-token"]').content;
const $ = (sel) => document.querySelector(sel);
let apps = [];
let selected = null;
let logSource = null;
let logLines = [];
const MAX_LOG_LINES = 1000;
const MAX_EVENTS = 200;

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === 'class') e.className = v;
    else if (k.startsWith('data-')) e.setAttribute(k, v);
    else e[k] = v;
  }
  for (const c of children) e.append(c === null || c === undefined ? '' : c);
  return e;
}

function bytes(n) {
  if (n === null || n === undefined) return '–';
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i === 0 ? n : n.toFixed(1)) + ' ' + units[i];
}

function duration(ms) {
  const s = Math.floor(ms / 1000);
  if (s < 60) return s + 's';
  if (s < 3600) return Math.floor(s / 60) + 'm';
  if (s < 86400) return Math.floor(s / 3600) + 'h';
  return Math.floor(s / 86400) + 'd';
}

function notice(text) {
  const n = $('#notice');
  n.textContent = text || '';
  n.hidden = !text;
}

function memberOf(app, inst) {
  const b = app.balancer;
  if (!b) return '';
  const m = b.members.find((m) => m.slot === inst.index && m.generation === (inst.generation || 0));
  if (!m) return 'not in pool';
  return (m.up ? 'up' : (m.down ? 'down (failures)' : 'not ready')) + ', ' + m.active + ' active';
}

function renderApps() {
  const body = $('#apps tbody');
  const rows = [];
  const now = Date.now();
  for (const app of apps) {
    const name = app.spec.name;
    app.instances.forEach((inst, i) => {
      const nameCell = i === 0
        ? el('button', { type: 'button', class: 'app-name', 'data-select': name, onclick: () => select(name) }, name)
        : '';
      const tr = el('tr', { 'data-app': name, 'data-index': String(inst.index), class: selected === name ? 'selected' : '' },
        el('td', {}, nameCell),
        el('td', {}, String(inst.index) + (inst.generation ? '.' + inst.generation : '')),
        el('td', { class: 'status status-' + inst.status }, inst.status),
        el('td', { class: 'pid' }, inst.pid ? String(inst.pid) : '–'),
        el('td', { class: 'uptime' }, inst.pid && inst.started_at_ms ? duration(now - inst.started_at_ms) : '–'),
        el('td', { class: 'restarts' }, String(inst.restarts)),
        el('td', { class: 'cpu' }, inst.cpu_percent === undefined || inst.cpu_percent === null ? '–' : inst.cpu_percent.toFixed(1) + '%'),
        el('td', { class: 'memory' }, bytes(inst.memory_bytes)),
        el('td', { class: 'balancer' }, memberOf(app, inst)));
      rows.push(tr);
    });
  }
  // Keep the focused button focused across the redraw.
  const focused = document.activeElement && document.activeElement.dataset ? document.activeElement.dataset.select : null;
  body.replaceChildren(...rows);
  if (focused) {
    const again = body.querySelector('button[data-select="' + CSS.escape(focused) + '"]');
    if (again) again.focus();
  }
  if (selected) renderBalancer();
}

function renderBalancer() {
  const app = apps.find((a) => a.spec.name === selected);
  const box = $('#balancer');
  if (!app || !app.balancer) { box.replaceChildren(); return; }
  const b = app.balancer;
  box.replaceChildren(
    el('h3', {}, 'Balancer'),
    el('p', {}, `${b.mode} on ${b.listen}, ${b.strategy}: ${b.connections} connections, ${b.retries} retries, ${b.unavailable} × 503, ${b.bad_gateway} × 502, ${b.timeouts} × 504`));
}

function connect(url, handlers) {
  const src = new EventSource(url);
  for (const [name, f] of Object.entries(handlers)) {
    src.addEventListener(name, (e) => f(JSON.parse(e.data)));
  }
  return src;
}

function statsStream() {
  const src = connect('/api/stats', {
    stats: (s) => {
      apps = s.apps;
      $('#conn').textContent = 'live';
      renderApps();
    },
  });
  src.onerror = () => { $('#conn').textContent = 'reconnecting…'; };
}

function eventsStream() {
  connect('/api/events', {
    event: (ev) => {
      const when = new Date(ev.at_ms).toLocaleTimeString();
      const text = `${when} ${ev.app}[${ev.instance}] ${ev.kind}` + (ev.pid ? ` pid ${ev.pid}` : '') + (ev.detail ? `: ${ev.detail}` : '');
      const list = $('#events');
      list.prepend(el('li', {}, text));
      while (list.children.length > MAX_EVENTS) list.lastChild.remove();
    },
    lagged: (l) => $('#events').prepend(el('li', {}, `${l.skipped} events skipped`)),
  });
}

function renderLogs() {
  const q = $('#log-search').value.toLowerCase();
  const shown = q ? logLines.filter((l) => l.toLowerCase().includes(q)) : logLines;
  const pre = $('#logs');
  const atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
  pre.textContent = shown.join('\n');
  if (atEnd) pre.scrollTop = pre.scrollHeight;
}

function select(name) {
  selected = name;
  $('#detail').hidden = false;
  $('#detail-h').textContent = name;
  const app = apps.find((a) => a.spec.name === name);
  if (app) $('#scale-count').value = app.instances.length;
  if (logSource) logSource.close();
  logLines = [];
  renderLogs();
  logSource = connect('/api/apps/' + encodeURIComponent(name) + '/logs', {
    line: (l) => {
      logLines.push(`[${l.instance}] ${l.text}`);
      if (logLines.length > MAX_LOG_LINES) logLines.splice(0, logLines.length - MAX_LOG_LINES);
      renderLogs();
    },
    lagged: (l) => logLines.push(`… ${l.skipped} lines skipped`),
  });
  // Lines written from now on are shown: tests and people can tell.
  $('#logs').dataset.state = 'connecting';
  logSource.onopen = () => { $('#logs').dataset.state = 'open'; };
  renderApps();
  loadHistory();
}

async function act(verb, body) {
  if (!selected) return;
  notice('');
  const res = await fetch('/api/apps/' + encodeURIComponent(selected) + '/' + verb, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', 'X-CSRF-Token': csrf },
    body: body ? JSON.stringify(body) : '{}',
    credentials: 'same-origin',
  });
  if (!res.ok) {
    const e = await res.json().catch(() => ({ error: res.statusText }));
    notice(`${verb} ${selected}: ${e.error}`);
  }
}

const COLORS = ['#2457c5', '#c62828', '#1a7f37', '#b26a00', '#6a1b9a', '#00838f'];

function chart(canvas, series, format) {
  const ctx = canvas.getContext('2d');
  const w = canvas.width, h = canvas.height, pad = 22;
  ctx.clearRect(0, 0, w, h);
  const now = Date.now(), from = now - 3600 * 1000;
  const max = Math.max(1e-9, ...series.flatMap((s) => s.map((p) => p[1])));
  ctx.fillStyle = '#666';
  ctx.font = '11px system-ui, sans-serif';
  ctx.fillText(format(max), 4, 12);
  ctx.fillText('-60m', 4, h - 4);
  ctx.fillText('now', w - 24, h - 4);
  ctx.strokeStyle = '#ddd';
  ctx.beginPath(); ctx.moveTo(0, h - pad); ctx.lineTo(w, h - pad); ctx.stroke();
  series.forEach((points, i) => {
    ctx.strokeStyle = COLORS[i % COLORS.length];
    ctx.lineWidth = 2;
    ctx.beginPath();
    points.forEach(([t, v], j) => {
      const x = ((t - from) / (now - from)) * w;
      const y = (h - pad) - (v / max) * (h - pad - 16);
      if (j === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
      if (points.length === 1) ctx.arc(x, y, 2, 0, 2 * Math.PI);
    });
    ctx.stroke();
  });
  canvas.dataset.points = String(series.reduce((n, s) => n + s.length, 0));
}

async function loadHistory() {
  if (!selected) return;
  const name = selected;
  const res = await fetch('/api/apps/' + encodeURIComponent(name) + '/history', { credentials: 'same-origin' });
  if (!res.ok || name !== selected) return;
  const h = await res.json();
  chart($('#cpu-chart'), h.instances.map((i) => i.points.map((p) => [p.at_ms, p.cpu_percent])), (v) => v.toFixed(1) + '%');
  chart($('#mem-chart'), h.instances.map((i) => i.points.map((p) => [p.at_ms, p.memory_bytes])), bytes);
}

for (const b of document.querySelectorAll('button[data-verb]')) {
  b.addEventListener('click', () => act(b.dataset.verb));
}
$('#scale').addEventListener('click', () => act('scale', { count: Number($('#scale-count').value) }));
$('#log-search').addEventListener('input', renderLogs);
statsStream();
eventsStream();
setInterval(loadHistory, 5000);
