// orchex operator console.
//
// Plain script, no framework and no build step: the server embeds this file
// as is and the page must work offline under a strict CSP. Everything the
// server sends (event messages, step output, paths, names) is untrusted, so
// the DOM is built with createElement/textContent only, never innerHTML.
//
// Data flow: GET /api/dashboard gives a DashboardView; the WebSocket then
// pushes a fresh snapshot every second (in sections, merged into the last:
// the jobs and the timeline only when they changed) plus every event as it
// happens.
// render(snapshot) is idempotent, and keyed lists reuse unchanged rows so a
// once-a-second re-render does not steal hover, focus or text selection.

'use strict';

(function () {
  // ===== State ================================================================

  const TOKEN_KEY = 'orchex.token';
  const FEED_CAP = 200;
  const BACKOFF_MIN_MS = 1000;
  const BACKOFF_MAX_MS = 30000;
  const TERMINAL = new Set(['succeeded', 'failed', 'cancelled', 'timedOut', 'skipped', 'interrupted', 'rolledBack']);

  const app = {
    token: null,
    signedIn: false,     // a dashboard load succeeded with the current token
    snapshot: null,
    role: 'readOnly',    // until the server says otherwise, show no controls
    feed: [],            // events, newest first, at most FEED_CAP
    feedIds: new Set(),
    filter: '',
    missed: 0,
    detailId: null,      // job shown in the drawer
    detailJob: null,
    detailFetchedAt: 0,
  };

  const live = { ws: null, retryMs: BACKOFF_MIN_MS, timer: null, gotMessage: false };

  // ===== DOM helpers ==========================================================

  const $ = (id) => document.getElementById(id);
  const SVG_NS = 'http://www.w3.org/2000/svg';

  // h('div', {class: 'x', data: {k: v}, title: 't'}, child, 'text', ...)
  // Strings become text nodes, so server data can be passed straight in.
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    setAttrs(el, attrs);
    append(el, children);
    return el;
  }

  function s(tag, attrs, ...children) {
    const el = document.createElementNS(SVG_NS, tag);
    setAttrs(el, attrs);
    append(el, children);
    return el;
  }

  function setAttrs(el, attrs) {
    if (!attrs) return;
    for (const [key, value] of Object.entries(attrs)) {
      if (value === undefined || value === null || value === false) continue;
      if (key === 'data') {
        for (const [k, v] of Object.entries(value)) if (v !== undefined && v !== null) el.dataset[k] = String(v);
      } else if (key === 'on') {
        for (const [type, fn] of Object.entries(value)) el.addEventListener(type, fn);
      } else if (key === 'text') {
        el.textContent = String(value);
      } else {
        el.setAttribute(key, value === true ? '' : String(value));
      }
    }
  }

  function append(el, children) {
    for (const child of children.flat()) {
      if (child === undefined || child === null || child === false) continue;
      el.appendChild(child instanceof Node ? child : document.createTextNode(String(child)));
    }
  }

  function setText(id, value) {
    const el = $(id);
    const text = value === undefined || value === null ? '–' : String(value);
    if (el && el.textContent !== text) el.textContent = text;
  }

  // Keyed reconciliation: rebuild a child only when its data changed, and
  // move nodes into order without touching the others. `salt` forces a
  // rebuild of everything when something outside the item changes (the role).
  function reconcile(container, items, { key, build, empty, salt = '', sig = JSON.stringify }) {
    const cache = container._keyed || new Map();
    const next = new Map();
    const nodes = [];
    for (const item of items) {
      const k = key(item);
      const signature = salt + sig(item);
      let entry = cache.get(k);
      if (!entry || entry.sig !== signature) entry = { sig: signature, node: build(item) };
      next.set(k, entry);
      nodes.push(entry.node);
    }
    if (!nodes.length && empty) nodes.push(container._empty || (container._empty = empty()));
    nodes.forEach((node, i) => {
      if (container.children[i] !== node) container.insertBefore(node, container.children[i] || null);
    });
    while (container.children.length > nodes.length) container.lastElementChild.remove();
    container._keyed = next;
  }

  function pill(state, label) {
    return h('span', { class: 'pill', data: { state } }, label || state || 'unknown');
  }

  // A thin bar whose fill width is set through CSSOM (allowed by the CSP,
  // unlike style attributes in markup).
  function bar(fraction, level) {
    const fill = h('div', { class: 'bar-fill', data: { level } });
    fill.style.width = `${Math.round(clamp(fraction, 0, 1) * 1000) / 10}%`;
    return h('div', { class: 'bar' }, fill);
  }

  function emptyRow(cols, text) {
    return h('tr', { class: 'empty-row' }, h('td', { colspan: cols }, text));
  }

  // ===== Formatting ===========================================================

  const numberFormat = new Intl.NumberFormat();
  const clamp = (x, lo, hi) => Math.min(hi, Math.max(lo, Number.isFinite(x) ? x : lo));
  const fmtNum = (n) => (n === undefined || n === null || !Number.isFinite(Number(n)) ? '–' : numberFormat.format(n));

  // Rust timestamps carry nanoseconds; trim to milliseconds so every
  // browser's Date.parse accepts them.
  function parseTs(ts) {
    if (!ts) return NaN;
    return Date.parse(String(ts).replace(/(\.\d{3})\d+/, '$1'));
  }

  function fmtMs(ms) {
    if (ms === undefined || ms === null || !Number.isFinite(Number(ms))) return '–';
    ms = Number(ms);
    if (ms < 1000) return `${Math.round(ms)} ms`;
    if (ms < 60000) return `${(ms / 1000).toFixed(ms < 10000 ? 2 : 1)} s`;
    const totalS = Math.round(ms / 1000);
    const hh = Math.floor(totalS / 3600);
    const mm = Math.floor((totalS % 3600) / 60);
    const ss = totalS % 60;
    return hh ? `${hh}h ${String(mm).padStart(2, '0')}m` : `${mm}m ${String(ss).padStart(2, '0')}s`;
  }

  // A stopwatch reading for running jobs: 0:07, 12:34, 1:02:03.
  function fmtClock(ms) {
    const t = Math.max(0, Math.floor(ms / 1000));
    const hh = Math.floor(t / 3600);
    const mm = Math.floor((t % 3600) / 60);
    const ss = String(t % 60).padStart(2, '0');
    return hh ? `${hh}:${String(mm).padStart(2, '0')}:${ss}` : `${mm}:${ss}`;
  }

  function fmtAgo(ts) {
    const t = parseTs(ts);
    if (!Number.isFinite(t)) return '–';
    const sec = Math.round((Date.now() - t) / 1000);
    if (sec < 5) return 'just now';
    if (sec < 60) return `${sec}s ago`;
    if (sec < 3600) return `${Math.floor(sec / 60)}m ago`;
    if (sec < 86400) return `${Math.floor(sec / 3600)}h ago`;
    return new Date(t).toLocaleDateString();
  }

  function fmtTime(ts, withSeconds = true) {
    const t = parseTs(ts);
    if (!Number.isFinite(t)) return '–';
    const opts = withSeconds ? { hour: '2-digit', minute: '2-digit', second: '2-digit' } : { hour: '2-digit', minute: '2-digit' };
    return new Date(t).toLocaleTimeString([], { ...opts, hour12: false });
  }

  const fmtFull = (ts) => (Number.isFinite(parseTs(ts)) ? new Date(parseTs(ts)).toLocaleString() : '–');
  const shortSha = (sha) => (sha ? String(sha).slice(0, 10) : '–');
  const score = (x) => (Number.isFinite(x) ? x.toFixed(2) : '–');

  function jobDurationMs(job) {
    const start = parseTs(job.startedAt);
    const end = parseTs(job.finishedAt);
    return Number.isFinite(start) && Number.isFinite(end) ? end - start : null;
  }

  function skipText(reason) {
    if (!reason) return '';
    const at = reason.retryAt ? ` (retry ${fmtTime(reason.retryAt)})` : '';
    switch (reason.code) {
      case 'unchanged': return 'unchanged inputs';
      case 'rateLimited': return `rate limited${at}`;
      case 'circuitOpen': return `circuit open${at}`;
      case 'queueFull': return 'queue full';
      case 'manuallyEdited': return `branch ${reason.branch || ''} edited by hand`;
      case 'coalesced': return `coalesced into ${reason.into || 'another job'}`;
      default: return String(reason.code || 'skipped');
    }
  }

  // Arbitrary time elements refresh themselves from these attributes once a
  // second (see the ticker), so rows need no rebuild just because time passed.
  const agoEl = (ts) => h('time', { datetime: ts, title: fmtFull(ts), data: { ago: ts } }, fmtAgo(ts));
  const sinceEl = (ts) => h('span', { data: { since: ts } }, fmtClock(Date.now() - parseTs(ts)));

  // ===== API ==================================================================

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  async function api(method, path, body) {
    const headers = { Accept: 'application/json' };
    if (app.token) headers.Authorization = `Bearer ${app.token}`;
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    let res;
    try {
      res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), cache: 'no-store', credentials: 'same-origin' });
    } catch (err) {
      throw new ApiError(0, 'network', 'cannot reach the orchex server');
    }
    const text = await res.text();
    let data = null;
    if (text) {
      try { data = JSON.parse(text); } catch (_) { data = null; }
    }
    if (!res.ok) {
      const e = (data && data.error) || {};
      throw new ApiError(res.status, e.code || `http_${res.status}`, e.message || res.statusText || 'request failed');
    }
    return data;
  }

  // One place decides what an API failure means for the operator.
  function reportError(err, what) {
    if (err.status === 401) {
      showAuth('The server rejected the token. Sign in again.');
      return;
    }
    if (err.status === 403) {
      toast('error', 'Read-only token', 'This token is read-only: controls need the admin token.');
      return;
    }
    toast('error', `${what} failed`, `${err.message}${err.code && err.status ? ` (${err.code})` : ''}`);
  }

  // Runs an action with the button disabled, so a double click does not
  // send it twice.
  async function withBusy(button, fn) {
    if (button) button.disabled = true;
    try { return await fn(); } finally { if (button) button.disabled = false; }
  }

  // ===== Toasts ===============================================================

  // A modal <dialog> sits in the top layer above everything, so toasts move
  // into the open dialog while there is one, or they would be hidden.
  function toastHost() {
    const host = document.querySelector('dialog[open]') || document.body;
    const box = $('toasts');
    if (box.parentNode !== host) host.appendChild(box);
    return box;
  }

  function toast(kind, title, message, timeoutMs = kind === 'error' ? 9000 : 5000) {
    const box = toastHost();
    const el = h('div', { class: 'toast', data: { kind }, role: kind === 'error' ? 'alert' : 'status' },
      h('div', { class: 'toast-title' }, title),
      message ? h('div', { class: 'muted' }, message) : null);
    el.addEventListener('click', () => el.remove());
    box.appendChild(el);
    while (box.children.length > 4) box.firstElementChild.remove();
    setTimeout(() => el.remove(), timeoutMs);
  }

  // ===== Dialogs ==============================================================

  // A <dialog> instead of window.confirm: it matches the page, and headless
  // tests can click #confirm-ok.
  function confirmAction({ title, message, ok }) {
    const dialog = $('confirm-dialog');
    setText('confirm-title', title);
    setText('confirm-message', message);
    setText('confirm-ok', ok || 'Confirm');
    dialog.returnValue = '';
    return new Promise((resolve) => {
      dialog.addEventListener('close', () => resolve(dialog.returnValue === 'ok'), { once: true });
      dialog.showModal();
      $('confirm-cancel').focus();
    });
  }

  function setupDialogs() {
    for (const dialog of document.querySelectorAll('dialog')) {
      // Clicks on the backdrop land on the dialog element itself.
      dialog.addEventListener('click', (e) => { if (e.target === dialog) dialog.close('cancel'); });
      // Another dialog may still be open beneath (confirm over the drawer).
      dialog.addEventListener('close', toastHost);
    }
  }

  // ===== Render: overview =====================================================

  const STATE_TEXT = {
    running: 'Dispatching jobs as triggers arrive.',
    paused: 'Paused: running jobs finish, nothing new starts.',
    stopped: 'Stopped: the orchestrator is not running.',
    emergencyStopped: 'Emergency stop: running jobs were cancelled; nothing dispatches until resumed.',
  };

  function render(snap) {
    renderAccess(snap.access || {});
    const orch = snap.orchestrator || {};
    renderState(orch.state);
    renderStats(orch);
    renderLastCycle(orch.recentCycles || []);
    renderOutcomes((orch.stats || {}).jobsByOutcome || {});
    renderHealth(snap.health || {});
    renderCharts(snap.timeline || []);
    renderRunning(orch.running || []);
    renderRecentJobs(snap.recentJobs || []);
    renderRepositories(snap.repositories || []);
    renderBreakers(orch.breakers || []);
    renderLimiters(orch.limiters || []);
  }

  function renderAccess(access) {
    app.role = access.role === 'admin' ? 'admin' : 'readOnly';
    const isAdmin = app.role === 'admin';
    for (const el of document.querySelectorAll('.admin-only')) el.hidden = !isAdmin;
    const badge = $('access-role');
    badge.hidden = !access.authRequired;
    badge.textContent = isAdmin ? 'admin' : 'read-only';
    $('sign-out').hidden = !app.token;
  }

  function renderState(state) {
    state = state || 'unknown';
    const el = $('orch-state');
    if (el.textContent !== state) el.textContent = state;
    el.dataset.state = state;
    document.querySelector('.state-card').dataset.state = state;
    setText('orch-state-desc', STATE_TEXT[state] || '');
    // Suggest the action that makes sense now, but keep both usable: the
    // snapshot may be a second stale.
    $('btn-pause').classList.toggle('is-suggested', state === 'running');
    $('btn-resume').classList.toggle('is-suggested', state !== 'running');
  }

  function renderStats(orch) {
    const stats = orch.stats || {};
    setText('queue-depth', orch.queueDepth ?? 0);
    setText('concurrency-limit', orch.concurrencyLimit);
    setText('max-concurrent', orch.maxConcurrent);
    const running = (orch.running || []).length;
    setText('running-count', running);
    const barFill = $('concurrency-bar');
    barFill.style.width = `${clamp(orch.maxConcurrent ? orch.concurrencyLimit / orch.maxConcurrent : 0, 0, 1) * 100}%`;
    setText('stat-cycles', fmtNum(stats.totalCycles));
    setText('stat-avg-cycle', fmtMs(stats.averageCycleMs));
    setText('stat-p95-cycle', fmtMs(stats.p95CycleMs));
    setText('stat-events', fmtNum(stats.eventsProcessed));
    setText('stat-regenerations', fmtNum(stats.regenerations));
    setText('stat-deliveries', fmtNum(stats.deliveries));
  }

  // recentCycles is newest last.
  function renderLastCycle(cycles) {
    const c = cycles[cycles.length - 1];
    const box = $('last-cycle');
    if (!c) {
      box.replaceChildren(h('p', { class: 'muted small' }, 'No cycle has completed yet.'));
      return;
    }
    box.replaceChildren(kv([
      ['Finished', agoEl(c.finishedAt)],
      ['Duration', fmtMs(c.durationMs)],
      ['Jobs', `${fmtNum(c.executed)} run · ${fmtNum(c.succeeded)} ok · ${fmtNum(c.failed)} not ok`],
      ['Parallelism', fmtNum(c.parallelism)],
    ]));
  }

  function renderOutcomes(byOutcome) {
    const entries = Object.entries(byOutcome).filter(([, n]) => n > 0).sort((a, b) => b[1] - a[1]);
    const total = entries.reduce((sum, [, n]) => sum + n, 0);
    const barEl = $('outcome-bar');
    barEl.replaceChildren(...entries.map(([state, n]) => {
      const seg = h('div', { class: 'outcome-seg', data: { outcome: state }, title: `${state}: ${n}` });
      seg.style.width = `${(n / total) * 100}%`;
      return seg;
    }));
    barEl.setAttribute('aria-label', entries.map(([k, n]) => `${k} ${n}`).join(', ') || 'no jobs yet');
    const legend = $('jobs-by-outcome');
    if (!entries.length) {
      legend.replaceChildren(h('li', null, 'No finished jobs yet'));
      return;
    }
    legend.replaceChildren(...entries.map(([state, n]) =>
      h('li', { data: { state } }, h('i', { class: 'swatch', data: { outcome: state } }), state, ' ', h('b', null, fmtNum(n)))));
  }

  function renderHealth(health) {
    const status = health.status || 'unknown';
    const el = $('health-status');
    el.textContent = status;
    el.dataset.state = status;
    const checks = Object.entries(health.checks || {});
    // Problems first: the card is small and an ok check is rarely news.
    const rank = { unhealthy: 0, degraded: 1, ok: 2 };
    checks.sort((a, b) => (rank[level(a[1])] ?? 3) - (rank[level(b[1])] ?? 3) || a[0].localeCompare(b[0]));
    $('health-checks').replaceChildren(...checks.slice(0, 4).map(([name, c]) =>
      h('li', { data: { level: level(c) }, title: (c && c.reason) || '' }, h('span', null, name), h('span', null, level(c)))));
  }

  // The contract says `level`; the core type serialises `status`. Accept both.
  const level = (c) => (c && (c.level || c.status)) || 'unknown';

  // ===== Render: charts =======================================================

  // Hand-drawn SVG sized to the container's real pixel width, so text is
  // not stretched; a ResizeObserver redraws on layout changes.
  let lastTimeline = [];
  let lastTimelineSig = '';

  function renderCharts(timeline, force = false) {
    const sig = JSON.stringify(timeline);
    if (!force && sig === lastTimelineSig) return;
    lastTimeline = timeline;
    lastTimelineSig = sig;
    drawThroughput($('chart-throughput'), timeline);
    drawCycle($('chart-cycle'), timeline);
  }

  // Rounds up to 1, 2 or 5 times a power of ten, so axis labels are tidy.
  function niceMax(x) {
    if (!(x > 0)) return 1;
    const p = 10 ** Math.floor(Math.log10(x));
    for (const m of [1, 2, 5, 10]) if (m * p >= x) return m * p;
    return 10 * p;
  }

  function chartFrame(el, timeline, max, fmtY) {
    const width = Math.max(200, el.clientWidth || 480);
    const height = Math.max(120, el.clientHeight || 170);
    const pad = { l: 44, r: 6, t: 8, b: 20 };
    const plotW = width - pad.l - pad.r;
    const plotH = height - pad.t - pad.b;
    const svg = s('svg', { viewBox: `0 0 ${width} ${height}`, width, height, preserveAspectRatio: 'none' });
    for (const f of [0, 0.5, 1]) {
      const y = pad.t + plotH * (1 - f);
      svg.append(s('line', { class: 'grid-line', x1: pad.l, x2: width - pad.r, y1: y, y2: y }));
      svg.append(s('text', { class: 'axis-label', x: pad.l - 6, y: y + 3.5, 'text-anchor': 'end' }, fmtY(max * f)));
    }
    const n = Math.max(timeline.length, 1);
    const slot = plotW / n;
    const labelAt = [0, Math.floor((n - 1) / 2), n - 1];
    labelAt.forEach((i, j) => {
      if (!timeline[i]) return;
      const anchor = j === 0 ? 'start' : j === 2 ? 'end' : 'middle';
      const x = j === 0 ? pad.l : j === 2 ? width - pad.r : pad.l + slot * (i + 0.5);
      svg.append(s('text', { class: 'axis-label', x, y: height - 5, 'text-anchor': anchor }, fmtTime(timeline[i].start, false)));
    });
    return { svg, pad, plotW, plotH, slot, width, height };
  }

  function drawThroughput(el, timeline) {
    // `jobsFinished` counts every finished job, failures included; the
    // failed part is stacked at the bottom so red stands out.
    const rows = timeline.map((b) => {
      const failed = Math.max(0, Number(b.jobsFailed) || 0);
      const finished = Math.max(failed, Number(b.jobsFinished) || 0);
      return { start: b.start, failed, ok: finished - failed, total: finished };
    });
    const max = niceMax(Math.max(0, ...rows.map((r) => r.total)));
    const fmtY = (v) => (Number.isInteger(v) ? String(v) : '');
    const f = chartFrame(el, timeline, max, fmtY);
    const y = (v) => f.pad.t + f.plotH * (1 - v / max);
    const gap = Math.min(2, f.slot * 0.2);
    rows.forEach((r, i) => {
      const x = f.pad.l + i * f.slot + gap / 2;
      const w = Math.max(1, f.slot - gap);
      const g = s('g', null, s('title', null, `${fmtTime(r.start, false)} · ${r.total} finished, ${r.failed} failed`));
      g.append(s('rect', { class: 'bar-hit', x, y: f.pad.t, width: w, height: f.plotH }));
      if (r.failed) g.append(s('rect', { class: 'bar-fail', x, y: y(r.failed), width: w, height: y(0) - y(r.failed) }));
      if (r.ok) g.append(s('rect', { class: 'bar-ok', x, y: y(r.total), width: w, height: y(r.failed) - y(r.total) }));
      f.svg.append(g);
    });
    if (!rows.some((r) => r.total)) {
      f.svg.append(s('text', { class: 'chart-empty', x: f.pad.l + f.plotW / 2, y: f.pad.t + f.plotH / 2, 'text-anchor': 'middle' }, 'No jobs finished in the last hour'));
    }
    el.replaceChildren(f.svg);
  }

  function drawCycle(el, timeline) {
    const values = timeline.map((b) => (b.avgCycleMs === null || b.avgCycleMs === undefined ? null : Number(b.avgCycleMs)));
    // A floor of 100 ms keeps the axis readable when there is no data.
    const max = niceMax(Math.max(100, ...values.filter((v) => v !== null)));
    const f = chartFrame(el, timeline, max, (v) => (v ? fmtMs(v).replace(' ', '') : '0'));
    const x = (i) => f.pad.l + f.slot * (i + 0.5);
    const y = (v) => f.pad.t + f.plotH * (1 - v / max);
    // A null bucket had no cycle: break the line there instead of drawing
    // a misleading slope through it.
    const segments = [];
    let current = [];
    values.forEach((v, i) => {
      if (v === null) { if (current.length) segments.push(current); current = []; } else current.push(i);
    });
    if (current.length) segments.push(current);
    for (const seg of segments) {
      if (seg.length === 1) {
        f.svg.append(s('circle', { class: 'point', cx: x(seg[0]), cy: y(values[seg[0]]), r: 2.5 }));
        continue;
      }
      const pts = seg.map((i) => `${x(i).toFixed(1)},${y(values[i]).toFixed(1)}`);
      const base = y(0).toFixed(1);
      f.svg.append(s('path', { class: 'area', d: `M${x(seg[0]).toFixed(1)},${base}L${pts.join('L')}L${x(seg[seg.length - 1]).toFixed(1)},${base}Z` }));
      f.svg.append(s('path', { class: 'line', d: `M${pts.join('L')}` }));
    }
    timeline.forEach((b, i) => {
      const label = values[i] === null ? 'no cycle' : `avg ${fmtMs(values[i])} over ${b.cycles ?? '?'} cycles`;
      f.svg.append(s('rect', { class: 'bar-hit', x: f.pad.l + i * f.slot, y: f.pad.t, width: f.slot, height: f.plotH },
        s('title', null, `${fmtTime(b.start, false)} · ${label}`)));
    });
    if (!segments.length) {
      f.svg.append(s('text', { class: 'chart-empty', x: f.pad.l + f.plotW / 2, y: f.pad.t + f.plotH / 2, 'text-anchor': 'middle' }, 'No cycles in the last hour'));
    }
    el.replaceChildren(f.svg);
  }

  function setupChartResize() {
    if (!('ResizeObserver' in window)) return;
    let pending = false;
    const ro = new ResizeObserver(() => {
      if (pending) return;
      pending = true;
      requestAnimationFrame(() => { pending = false; renderCharts(lastTimeline, true); });
    });
    ro.observe($('chart-throughput'));
    ro.observe($('chart-cycle'));
  }

  // ===== Render: jobs =========================================================

  function adminButton(label, className, onClick) {
    return h('button', { class: `btn btn-sm ${className || ''}`, type: 'button', on: { click: (e) => { e.stopPropagation(); onClick(e.currentTarget); } } }, label);
  }

  function jobActions(job) {
    if (app.role !== 'admin') return [];
    const buttons = [];
    if (job.state === 'queued' || job.state === 'running') buttons.push(adminButton('Cancel', 'btn-danger', (b) => cancelJob(job.id, b)));
    if (job.rollback === 'available' || job.rollback === 'inProgress') buttons.push(adminButton('Rollback', '', (b) => rollbackJob(job, b)));
    return buttons;
  }

  function renderRunning(running) {
    setText('running-total', running.length);
    reconcile($('running-jobs'), running, {
      key: (j) => j.id,
      salt: app.role,
      empty: () => h('p', { class: 'empty' }, 'Nothing is running.'),
      build: (j) => {
        const total = Number(j.stepsTotal) || 0;
        const done = Number(j.stepsDone) || 0;
        const item = h('div', { class: 'running-item', data: { jobId: j.id }, tabindex: 0, role: 'button', title: 'Show job details' },
          h('div', { class: 'running-title' }, j.repo, h('span', { class: 'muted' }, ' · '), j.pipeline),
          h('div', { class: 'running-meta' },
            h('span', null, `${done} / ${total || '?'} steps`),
            h('span', { class: 'mono', title: `started ${fmtFull(j.startedAt)}` }, sinceEl(j.startedAt)),
            ...jobActions({ id: j.id, state: 'running' })),
          bar(total ? done / total : 0));
        item.addEventListener('click', () => openJob(j.id));
        item.addEventListener('keydown', (e) => { if (e.key === 'Enter') openJob(j.id); });
        return item;
      },
    });
  }

  function renderRecentJobs(jobs) {
    reconcile($('recent-jobs'), jobs, {
      key: (j) => j.id,
      salt: app.role,
      empty: () => emptyRow(9, 'No jobs yet.'),
      build: (job) => {
        const trigger = job.trigger || {};
        const dur = jobDurationMs(job);
        const note = job.error || skipText(job.skipReason);
        const row = h('tr', { data: { jobId: job.id, state: job.state }, tabindex: 0 },
          h('td', null, pill(job.state)),
          h('td', null, job.repo),
          h('td', null, job.pipeline),
          h('td', null, h('span', { class: 'chip' }, trigger.kind || '–'),
            trigger.dryRun ? [' ', h('span', { class: 'chip' }, 'dry run')] : null,
            trigger.force ? [' ', h('span', { class: 'chip' }, 'force')] : null),
          h('td', null, agoEl(job.createdAt)),
          h('td', { class: 'num mono' }, dur !== null ? fmtMs(dur) : job.state === 'running' && job.startedAt ? sinceEl(job.startedAt) : '–'),
          h('td', null, job.changed === true ? h('span', { class: 'yes' }, 'yes') : job.changed === false ? h('span', { class: 'no' }, 'no') : '–'),
          h('td', { class: `notes${job.error ? ' is-error' : ''}`, title: note }, note),
          h('td', null, h('div', { class: 'row-actions' }, ...jobActions(job))));
        row.addEventListener('click', () => openJob(job.id));
        row.addEventListener('keydown', (e) => { if (e.key === 'Enter') openJob(job.id); });
        return row;
      },
    });
  }

  // ===== Render: repositories, breakers, limiters ============================

  // Health is good when high; chaos and complexity are good when low.
  function scoreLevel(value, higherIsBetter) {
    if (!Number.isFinite(value)) return undefined;
    const v = higherIsBetter ? value : 1 - value;
    return v >= 0.7 ? 'good' : v >= 0.4 ? 'fair' : 'poor';
  }

  function scoreRow(name, value, higherIsBetter) {
    return h('div', { class: 'score', title: `${name}: ${score(value)} (${higherIsBetter ? 'higher' : 'lower'} is better)` },
      h('span', { class: 'score-name' }, name),
      bar(Number.isFinite(value) ? value : 0, scoreLevel(value, higherIsBetter)),
      h('span', { class: 'score-value' }, score(value)));
  }

  function renderRepositories(repos) {
    setText('repo-total', repos.length);
    reconcile($('repositories'), repos, {
      key: (r) => r.name,
      salt: app.role,
      empty: () => h('p', { class: 'empty' }, 'No repositories configured.'),
      build: (repo) => {
        const watcher = repo.watcher || { state: 'unknown' };
        const a = repo.analysis;
        const runBtn = app.role === 'admin' && (repo.pipelines || []).length
          ? adminButton('Run…', '', () => openRunDialog(repo.name)) : null;
        return h('div', { class: 'repo', data: { repo: repo.name, enabled: repo.enabled !== false } },
          h('div', { class: 'repo-head' },
            h('span', { class: 'repo-name' }, repo.name),
            repo.enabled === false ? pill('disabled') : pill(watcher.state)),
          h('div', { class: 'repo-path', title: repo.path }, repo.branch ? [h('span', { class: 'chip' }, repo.branch), ' '] : null, repo.path),
          watcher.reason ? h('div', { class: 'repo-reason' }, watcher.reason) : null,
          a ? h('div', { class: 'scores' },
            scoreRow('health', a.health, true),
            scoreRow('chaos', a.chaos, false),
            scoreRow('complexity', a.complexity, false))
            : h('div', { class: 'muted small' }, 'Not analysed yet.'),
          h('div', { class: 'repo-foot' },
            h('span', null,
              `${fmtNum(watcher.watchedDirs ?? 0)} dirs watched`,
              a && a.codeLines !== undefined ? ` · ${fmtNum(a.codeLines)} LOC` : '',
              a && a.computedAt ? [' · analysed ', agoEl(a.computedAt)] : ''),
            runBtn));
      },
    });
  }

  function renderBreakers(breakers) {
    reconcile($('breakers'), breakers, {
      key: (b) => b.name,
      empty: () => emptyRow(6, 'No circuit breakers yet.'),
      build: (b) => h('tr', { data: { name: b.name, state: b.state } },
        h('td', { class: 'mono' }, b.name),
        h('td', null, pill(b.state)),
        h('td', { class: 'num' }, fmtNum(b.failures)),
        h('td', { class: 'num' }, fmtNum(b.rejections)),
        h('td', { class: 'num' }, fmtNum(b.total)),
        h('td', { class: 'num' }, Number.isFinite(b.failureRate) ? `${b.failureRate.toFixed(1)}%` : '–')),
    });
  }

  function renderLimiters(limiters) {
    reconcile($('limiters'), limiters, {
      key: (l) => l.repo,
      empty: () => h('p', { class: 'empty' }, 'No rate limiters.'),
      build: (l) => {
        const frac = l.perHour ? l.available / l.perHour : 0;
        return h('div', { class: 'limiter', data: { repo: l.repo } },
          h('span', { class: 'limiter-name' }, l.repo),
          h('span', { class: 'limiter-value' }, `${fmtNum(l.available)} / ${fmtNum(l.perHour)} per hour`),
          bar(frac, frac > 0.5 ? 'good' : frac > 0.15 ? 'fair' : 'poor'));
      },
    });
  }

  // ===== Event feed ===========================================================

  const eventTime = (e) => e._t ?? (e._t = parseTs(e.ts) || 0);

  // GET /api/dashboard and refills after a lag bring the last 50 events and
  // the socket sends each one live; merge by id so nothing shows twice and
  // order stays newest first.
  function addEvents(events, isLive) {
    let added = false;
    for (const e of events || []) {
      if (!e || e.id === undefined) continue;
      const id = String(e.id);
      if (app.feedIds.has(id)) continue;
      app.feedIds.add(id);
      app.feed.push(isLive ? { ...e, _live: true } : e);
      added = true;
    }
    if (!added) return;
    // UUID v7 ids sort by time, which breaks ties within a millisecond.
    app.feed.sort((a, b) => eventTime(b) - eventTime(a) || (String(b.id) > String(a.id) ? 1 : -1));
    for (const dropped of app.feed.splice(FEED_CAP)) app.feedIds.delete(String(dropped.id));
    scheduleFeedRender();
  }

  // Events can arrive in bursts; draw at most once per frame.
  let feedFrame = 0;
  function scheduleFeedRender() {
    if (feedFrame) return;
    feedFrame = requestAnimationFrame(() => { feedFrame = 0; renderFeed(); });
  }

  function renderFeed() {
    const feedEl = $('event-feed');
    reconcile(feedEl, app.feed, {
      key: (e) => String(e.id),
      sig: () => '', // events never change once published
      build: (e) => {
        const where = [e.repo, e.pipeline].filter(Boolean).join(' · ');
        const li = h('li', {
          class: `event sev-${e.severity || 'info'}${e._live ? ' is-new' : ''}`,
          data: { kind: e.kind, severity: e.severity, id: e.id, job: e.jobId },
          title: e.jobId ? 'Show the job' : undefined,
        },
        h('time', { class: 'event-time', datetime: e.ts, title: fmtFull(e.ts) }, fmtTime(e.ts)),
        h('div', { class: 'event-head' }, h('span', { class: 'chip' }, e.kind), where ? h('span', { class: 'event-repo' }, where) : null),
        h('div', { class: 'event-msg' }, e.message));
        li._event = e;
        if (e.jobId) li.addEventListener('click', () => openJob(e.jobId));
        return li;
      },
    });
    applyFilter();
  }

  function eventMatches(e, terms) {
    const hay = `${e.kind || ''} ${e.repo || ''} ${e.pipeline || ''} ${e.severity || ''}`.toLowerCase();
    return terms.every((t) => hay.includes(t));
  }

  function applyFilter() {
    const terms = app.filter.toLowerCase().split(/\s+/).filter(Boolean);
    let visible = 0;
    for (const li of $('event-feed').children) {
      const show = !terms.length || eventMatches(li._event || {}, terms);
      if (li.hidden === show) li.hidden = !show;
      if (show) visible++;
    }
    const empty = $('feed-empty');
    empty.hidden = visible > 0;
    empty.textContent = app.feed.length ? 'No events match the filter.' : 'No events yet.';
  }

  let laggedTimer = 0;
  function showLagged(missed) {
    app.missed += Number(missed) || 0;
    const el = $('lagged-notice');
    el.textContent = `missed ${fmtNum(app.missed)} events`;
    el.title = 'The connection fell behind; a fresh snapshot follows. Click to dismiss.';
    el.hidden = false;
    clearTimeout(laggedTimer);
    laggedTimer = setTimeout(hideLagged, 20000);
    refillFeed();
  }

  // Snapshots on the socket carry no events (each one arrives on its own),
  // so after a gap the feed is refilled from the store; one request at a
  // time however often the socket lags.
  let refilling = false;
  async function refillFeed() {
    if (refilling) return;
    refilling = true;
    try {
      const page = await api('GET', '/api/events?limit=50');
      addEvents(page && page.items, false);
    } catch (_) {
      // The next lag or reconnect tries again.
    } finally {
      refilling = false;
    }
  }

  function hideLagged() {
    app.missed = 0;
    $('lagged-notice').hidden = true;
  }

  // ===== Job detail ===========================================================

  async function openJob(id) {
    const dialog = $('job-dialog');
    app.detailId = id;
    app.detailJob = null;
    setText('job-title', id);
    $('job-actions').replaceChildren();
    $('job-detail').replaceChildren(h('p', { class: 'empty' }, 'Loading…'));
    if (!dialog.open) dialog.showModal();
    await refreshDetail();
  }

  async function refreshDetail() {
    const id = app.detailId;
    if (!id) return;
    app.detailFetchedAt = Date.now();
    try {
      const job = await api('GET', `/api/jobs/${encodeURIComponent(id)}`);
      if (app.detailId === id) renderDetail(job);
    } catch (err) {
      if (app.detailId !== id) return;
      if (err.status === 404) $('job-detail').replaceChildren(h('p', { class: 'empty' }, 'This job no longer exists.'));
      else reportError(err, 'Loading the job');
    }
  }

  // A job that is still moving is re-read every few seconds while open.
  function maybeRefreshDetail() {
    const job = app.detailJob;
    if (!$('job-dialog').open || !job || TERMINAL.has(job.state)) return;
    if (Date.now() - app.detailFetchedAt > 2500) refreshDetail();
  }

  function kv(pairs) {
    return h('dl', { class: 'kv' }, pairs.filter(Boolean).flatMap(([k, v]) => [h('dt', null, k), h('dd', null, v)]));
  }

  function section(title, ...content) {
    return h('section', { class: 'section' }, h('h3', null, title), ...content);
  }

  function fileList(items, cls, cap = 200) {
    const list = h('ul', { class: 'file-list' }, items.slice(0, cap).map((p) => h('li', { class: cls }, p)));
    if (items.length > cap) list.append(h('li', { class: 'muted' }, `… and ${items.length - cap} more`));
    return list;
  }

  function renderDetail(job) {
    app.detailJob = job;
    const body = $('job-detail');
    // Keep the reader's place across periodic refreshes of a running job.
    const scroll = [body.scrollTop, ...[...body.querySelectorAll('pre')].map((p) => p.scrollTop)];

    setText('job-title', job.id);
    $('job-actions').replaceChildren(...jobActions(job));
    const t = job.trigger || {};
    const dur = jobDurationMs(job);
    const previous = t.previousCommit || t.previous;
    const parts = [
      section('Summary', kv([
        ['State', pill(job.state)],
        ['Repository', job.repo],
        ['Pipeline', job.pipeline],
        ['Trigger', [h('span', { class: 'chip' }, t.kind || '–'), t.force ? ' force' : '', t.dryRun ? ' dry run' : '']],
        t.commit ? ['Commit', h('span', { class: 'mono', title: t.commit }, previous ? `${shortSha(previous)} → ${shortSha(t.commit)}` : shortSha(t.commit))] : null,
        ['Priority', String(job.priority ?? '–')],
        ['Created', fmtFull(job.createdAt)],
        ['Started', fmtFull(job.startedAt)],
        ['Finished', fmtFull(job.finishedAt)],
        ['Duration', dur !== null ? fmtMs(dur) : job.state === 'running' && job.startedAt ? sinceEl(job.startedAt) : '–'],
        ['Changed', job.changed === true ? 'yes' : job.changed === false ? 'no' : '–'],
        job.interruptions ? ['Interruptions', String(job.interruptions)] : null,
        job.skipReason ? ['Skipped', skipText(job.skipReason)] : null,
        ['Rollback', job.rollback || 'not applicable'],
      ])),
    ];
    if (job.error) parts.push(section('Error', h('div', { class: 'error-box' }, job.error)));
    if (t.paths && t.paths.length) parts.push(section(`Changed paths (${t.paths.length})`, fileList(t.paths, '')));

    const steps = job.steps || [];
    parts.push(section(`Steps (${steps.length})`, steps.length ? steps.map(renderStep) : h('p', { class: 'muted small' }, 'No step has run.')));

    if (job.diff) {
      const d = job.diff;
      const added = d.added || [], modified = d.modified || [], deleted = d.deleted || [];
      parts.push(section('Diff',
        h('p', { class: 'small' }, h('span', { class: 'yes' }, `+${fmtNum(d.linesAdded ?? 0)}`), ' ', h('span', { class: 'delta-up' }, `−${fmtNum(d.linesRemoved ?? 0)}`),
          h('span', { class: 'muted' }, ` lines · ${added.length} added, ${modified.length} modified, ${deleted.length} deleted`)),
        added.length ? fileList(added, 'f-added') : null,
        modified.length ? fileList(modified, 'f-modified') : null,
        deleted.length ? fileList(deleted, 'f-deleted') : null));
    }

    if (job.delivery) {
      const dl = job.delivery;
      parts.push(section('Delivery', kv([
        ['Kind', dl.kind],
        dl.branch ? ['Branch', h('span', { class: 'mono' }, dl.branch)] : null,
        dl.commit ? ['Commit', h('span', { class: 'mono', title: dl.commit }, shortSha(dl.commit))] : null,
        dl.kind === 'branch' ? ['Previous', dl.previous ? h('span', { class: 'mono', title: dl.previous }, shortSha(dl.previous)) : 'branch created'] : null,
        ['Files', String((dl.files || []).length)],
      ]),
      (dl.files || []).length ? fileList(dl.files, '') : null,
      (dl.conflicts || []).length ? [h('p', { class: 'small delta-up' }, `${dl.conflicts.length} file(s) not written because they changed meanwhile:`), fileList(dl.conflicts, 'f-conflict')] : null));
    }

    if (job.impact && job.impact.length) {
      parts.push(section('Impact', h('div', { class: 'table-wrap' }, h('table', { class: 'table' },
        h('thead', null, h('tr', null, h('th', null, 'Path'), h('th', { class: 'num' }, 'Complexity'), h('th', { class: 'num' }, 'LOC'))),
        h('tbody', null, job.impact.map((i) => h('tr', null,
          h('td', { class: 'mono' }, i.path),
          h('td', { class: 'num' }, `${score(i.complexityBefore)} → ${score(i.complexityAfter)} `, delta(i.complexityAfter - i.complexityBefore, 2)),
          h('td', { class: 'num' }, `${fmtNum(i.locBefore)} → ${fmtNum(i.locAfter)} `, delta(i.locAfter - i.locBefore, 0)))))))));
    }

    body.replaceChildren(...parts);
    body.scrollTop = scroll[0];
    [...body.querySelectorAll('pre')].forEach((p, i) => { if (scroll[i + 1] !== undefined) p.scrollTop = scroll[i + 1]; });
  }

  // Higher complexity or more code is the direction to watch, so it is red.
  function delta(d, digits) {
    if (!Number.isFinite(d) || d === 0) return h('span', { class: 'muted' }, '(±0)');
    return h('span', { class: d > 0 ? 'delta-up' : 'delta-down' }, `(${d > 0 ? '+' : ''}${d.toFixed(digits)})`);
  }

  function renderStep(step) {
    const code = step.exitCode;
    const head = h('div', { class: 'step-head' },
      h('span', { class: 'step-name' }, step.name, step.validation ? [' ', h('span', { class: 'chip' }, 'validation')] : null),
      step.timedOut ? pill('timedOut', 'timed out') : null,
      h('span', { class: 'step-exit', data: { ok: code === undefined || code === null ? undefined : code === 0 } },
        code === undefined || code === null ? 'no exit code' : `exit ${code}`),
      h('span', { class: 'muted mono' }, fmtMs(step.durationMs)));
    const out = step.outputTail
      ? h('pre', { class: 'output', tabindex: 0 }, step.outputTail)
      : h('p', { class: 'muted small output' }, 'No output.');
    return h('div', { class: 'step' }, head, out);
  }

  // ===== Actions ==============================================================

  // After a control call the socket brings the new state within a second;
  // without a live socket, fetch it now.
  function refreshSoon() {
    if (live.ws && live.ws.readyState === WebSocket.OPEN) return;
    loadDashboard().catch(() => {});
  }

  async function control(action, button) {
    const labels = { pause: 'Pause', resume: 'Resume', 'emergency-stop': 'Emergency stop' };
    const done = { pause: 'Paused', resume: 'Resumed', 'emergency-stop': 'Emergency stop engaged' };
    await withBusy(button, async () => {
      try {
        const res = await api('POST', `/api/control/${action}`);
        if (res && res.state) {
          if (app.snapshot && app.snapshot.orchestrator) app.snapshot.orchestrator.state = res.state;
          renderState(res.state);
        }
        const cancelled = res && res.cancelled ? res.cancelled.length : 0;
        const detail = [res && res.state ? `Orchestrator is ${res.state}.` : '', cancelled ? `${cancelled} running job(s) cancelled.` : ''];
        toast(action === 'emergency-stop' ? 'warn' : 'ok', done[action], detail.filter(Boolean).join(' '));
        refreshSoon();
      } catch (err) {
        reportError(err, labels[action]);
      }
    });
  }

  async function emergencyStop(button) {
    const ok = await confirmAction({
      title: 'Emergency stop?',
      message: 'Every running job is cancelled and nothing dispatches until someone resumes the orchestrator.',
      ok: 'Stop everything',
    });
    if (ok) await control('emergency-stop', button);
  }

  async function cancelJob(id, button) {
    await withBusy(button, async () => {
      try {
        const job = await api('POST', `/api/jobs/${encodeURIComponent(id)}/cancel`);
        toast('ok', 'Job cancelled', job ? `${job.repo} · ${job.pipeline}: ${job.state}` : id);
        if (app.detailId === id && job && job.id) renderDetail(job);
        refreshSoon();
      } catch (err) {
        reportError(err, 'Cancel');
      }
    });
  }

  async function rollbackJob(job, button) {
    const ok = await confirmAction({
      title: 'Roll back this job?',
      message: `orchex restores what ${job.pipeline} on ${job.repo} replaced${job.delivery && job.delivery.branch ? ` on branch ${job.delivery.branch}` : ''}.`,
      ok: 'Roll back',
    });
    if (!ok) return;
    await withBusy(button, async () => {
      try {
        const res = await api('POST', `/api/jobs/${encodeURIComponent(job.id)}/rollback`);
        toast('ok', 'Rolled back', `${job.repo} · ${job.pipeline}`);
        if (app.detailId === job.id && res && res.id) renderDetail(res);
        refreshSoon();
      } catch (err) {
        reportError(err, 'Rollback');
      }
    });
  }

  function fillPipelines() {
    const repos = (app.snapshot && app.snapshot.repositories) || [];
    const repo = repos.find((r) => r.name === $('run-repo').value);
    const pipelines = (repo && repo.pipelines) || [];
    $('run-pipeline').replaceChildren(
      ...pipelines.map((p) => h('option', { value: p }, p)),
      // No pipeline in the request means every pipeline routed for a manual run.
      h('option', { value: '' }, pipelines.length ? 'All routed pipelines' : '(all routed pipelines)'));
  }

  function openRunDialog(preselect) {
    const repos = (app.snapshot && app.snapshot.repositories) || [];
    const select = $('run-repo');
    select.replaceChildren(...repos.map((r) => h('option', { value: r.name }, r.enabled === false ? `${r.name} (disabled)` : r.name)));
    if (preselect) select.value = preselect;
    fillPipelines();
    $('run-submit').disabled = !repos.length;
    $('run-dialog').showModal();
  }

  async function submitRun(e) {
    e.preventDefault();
    const body = { repo: $('run-repo').value, force: $('run-force').checked, dryRun: $('run-dry-run').checked };
    const pipeline = $('run-pipeline').value;
    if (pipeline) body.pipeline = pipeline;
    await withBusy($('run-submit'), async () => {
      try {
        const res = await api('POST', '/api/jobs', body);
        const jobs = (res && res.items) || [];
        $('run-dialog').close();
        const skipped = jobs.filter((j) => j.state === 'skipped');
        toast('ok', `Queued ${jobs.length} job${jobs.length === 1 ? '' : 's'}`,
          `${body.repo}${pipeline ? ` · ${pipeline}` : ''}${skipped.length ? ` — ${skipped.length} skipped: ${skipText(skipped[0].skipReason)}` : ''}`);
        refreshSoon();
      } catch (err) {
        reportError(err, 'Run pipeline');
      }
    });
  }

  function setupControls() {
    $('btn-pause').addEventListener('click', (e) => control('pause', e.currentTarget));
    $('btn-resume').addEventListener('click', (e) => control('resume', e.currentTarget));
    $('btn-estop').addEventListener('click', (e) => emergencyStop(e.currentTarget));
    $('btn-run').addEventListener('click', () => openRunDialog());
    $('run-repo').addEventListener('change', fillPipelines);
    $('run-form').addEventListener('submit', submitRun);
    $('run-cancel').addEventListener('click', () => $('run-dialog').close());
    $('job-close').addEventListener('click', () => $('job-dialog').close());
    $('job-dialog').addEventListener('close', () => { app.detailId = null; app.detailJob = null; });
    $('event-filter').addEventListener('input', (e) => { app.filter = e.target.value; applyFilter(); });
    $('lagged-notice').addEventListener('click', hideLagged);
  }

  // ===== Live updates =========================================================

  function setConn(state, title) {
    const el = $('conn-state');
    el.dataset.state = state;
    el.textContent = state;
    el.title = title || { live: 'Live: updates stream over the WebSocket', paused: 'Paused while the tab is hidden', reconnecting: 'Reconnecting…', connecting: 'Connecting…' }[state] || '';
  }

  function wsUrl() {
    return `${location.protocol === 'https:' ? 'wss:' : 'ws:'}//${location.host}/api/ws`;
  }

  // Forget the socket before closing it, so its close handler knows the
  // close was ours and does not schedule a reconnect.
  function closeSocket() {
    const ws = live.ws;
    live.ws = null;
    if (ws && ws.readyState <= WebSocket.OPEN) ws.close(1000, 'client closing');
  }

  function connect() {
    clearTimeout(live.timer);
    live.timer = null;
    if (document.hidden || !app.signedIn) return;
    closeSocket();
    let ws;
    try {
      // Browsers cannot set headers on a WebSocket; the server accepts the
      // token as the subprotocol pair `bearer, <token>` and echoes `bearer`.
      ws = app.token ? new WebSocket(wsUrl(), ['bearer', app.token]) : new WebSocket(wsUrl());
    } catch (err) {
      // A token with characters not allowed in a subprotocol lands here.
      setConn('reconnecting', `cannot open the WebSocket: ${err.message}`);
      scheduleReconnect();
      return;
    }
    live.ws = ws;
    live.gotMessage = false;
    ws.addEventListener('open', () => { if (live.ws === ws) setConn('live'); });
    ws.addEventListener('message', (ev) => { if (live.ws === ws) onMessage(ev.data); });
    ws.addEventListener('close', () => {
      if (live.ws !== ws) return;
      live.ws = null;
      scheduleReconnect();
    });
  }

  function onMessage(raw) {
    let msg;
    try { msg = JSON.parse(raw); } catch (_) { return; }
    if (!msg || typeof msg !== 'object') return;
    if (!live.gotMessage) {
      // Reset the backoff only once the server has spoken: a socket that
      // opens and is closed at once must not reconnect in a tight loop.
      live.gotMessage = true;
      live.retryMs = BACKOFF_MIN_MS;
    }
    switch (msg.type) {
      // A snapshot message may carry only some sections (the jobs and the
      // timeline come only when they changed): merge it into what we have.
      case 'snapshot': if (msg.snapshot) applySnapshot({ ...(app.snapshot || {}), ...msg.snapshot }); break;
      case 'event': if (msg.event) addEvents([msg.event], true); break;
      case 'lagged': showLagged(msg.missed); break;
      default: break;
    }
  }

  function scheduleReconnect() {
    clearTimeout(live.timer);
    if (document.hidden || !app.signedIn) return;
    const delay = live.retryMs;
    live.retryMs = Math.min(live.retryMs * 2, BACKOFF_MAX_MS);
    setConn('reconnecting', `Connection lost; retrying in ${Math.round(delay / 1000)} s`);
    live.timer = setTimeout(reconnect, delay);
  }

  // Fetch before reconnecting, so a revoked token shows the sign-in form
  // instead of looping, and the page is current even if the socket fails.
  async function reconnect() {
    live.timer = null;
    if (document.hidden) return;
    try {
      await loadDashboard();
    } catch (err) {
      if (err.status === 401 || err.status === 403) { onAuthFailure(err); return; }
      scheduleReconnect();
      return;
    }
    connect();
  }

  function setupVisibility() {
    document.addEventListener('visibilitychange', () => {
      if (document.hidden) {
        clearTimeout(live.timer);
        live.timer = null;
        closeSocket();
        stopTicker();
        if (app.signedIn) setConn('paused');
      } else if (app.signedIn) {
        live.retryMs = BACKOFF_MIN_MS;
        startTicker();
        setConn('connecting');
        reconnect();
      }
    });
  }

  // ===== Ticker ===============================================================

  // Relative times and running stopwatches move between snapshots too (and
  // keep moving when the socket is down); nothing runs while hidden.
  let tickTimer = 0;
  function tick() {
    const now = Date.now();
    for (const el of document.querySelectorAll('[data-since]')) {
      const text = fmtClock(now - parseTs(el.dataset.since));
      if (el.textContent !== text) el.textContent = text;
    }
    for (const el of document.querySelectorAll('[data-ago]')) {
      const text = fmtAgo(el.dataset.ago);
      if (el.textContent !== text) el.textContent = text;
    }
  }
  function startTicker() { if (!tickTimer) tickTimer = setInterval(tick, 1000); }
  function stopTicker() { clearInterval(tickTimer); tickTimer = 0; }

  // ===== Snapshot, auth and boot ==============================================

  function applySnapshot(snap) {
    app.snapshot = snap;
    render(snap);
    addEvents(snap.recentEvents, false);
    maybeRefreshDetail();
  }

  async function loadDashboard() {
    const snap = await api('GET', '/api/dashboard');
    if (!snap || typeof snap !== 'object') throw new ApiError(500, 'internal', 'the dashboard answer is not JSON');
    applySnapshot(snap);
    return snap;
  }

  // A rejected token is useless; forget it so a reload asks again.
  function showAuth(message) {
    app.signedIn = false;
    app.token = null;
    try { sessionStorage.removeItem(TOKEN_KEY); } catch (_) { /* storage disabled */ }
    clearTimeout(live.timer);
    closeSocket();
    for (const d of document.querySelectorAll('dialog[open]')) d.close();
    app.role = 'readOnly';
    for (const el of document.querySelectorAll('.admin-only')) el.hidden = true;
    $('dashboard').hidden = true;
    $('auth-view').hidden = false;
    $('access-role').hidden = true;
    $('sign-out').hidden = true;
    setConn('paused', 'Not signed in');
    const err = $('token-error');
    err.textContent = message || '';
    err.hidden = !message;
    const input = $('token-input');
    input.value = '';
    input.focus();
  }

  function onAuthFailure(err) {
    if (err.status === 403) showAuth('The server refused this token (403): it is read-only or not allowed here.');
    else showAuth(app.token ? 'That token was rejected.' : '');
  }

  function showDashboard() {
    app.signedIn = true;
    $('auth-view').hidden = true;
    $('dashboard').hidden = false;
    // Charts were measured while hidden (zero width); draw them again.
    renderCharts(lastTimeline, true);
    startTicker();
  }

  async function boot() {
    try { app.token = sessionStorage.getItem(TOKEN_KEY) || null; } catch (_) { app.token = null; }
    setConn('connecting');
    try {
      await loadDashboard();
    } catch (err) {
      if (err.status === 401 || err.status === 403) { onAuthFailure(err); return; }
      // Server down or erroring: show the (empty) page and keep retrying.
      showDashboard();
      toast('error', 'Cannot load the dashboard', err.message);
      scheduleReconnect();
      return;
    }
    showDashboard();
    connect();
  }

  function setupAuth() {
    $('token-form').addEventListener('submit', (e) => {
      e.preventDefault();
      const value = $('token-input').value.trim();
      if (!value) return;
      app.token = value;
      try { sessionStorage.setItem(TOKEN_KEY, value); } catch (_) { /* storage disabled: keep it in memory */ }
      boot();
    });
    $('sign-out').addEventListener('click', (e) => {
      e.preventDefault();
      try { sessionStorage.removeItem(TOKEN_KEY); } catch (_) { /* storage disabled */ }
      app.token = null;
      app.signedIn = false;
      closeSocket();
      boot();
    });
  }

  function init() {
    setupDialogs();
    setupControls();
    setupAuth();
    setupVisibility();
    setupChartResize();
    boot();
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init);
  else init();
})();
