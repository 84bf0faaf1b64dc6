// nself-audit viewer: plain JavaScript, no dependencies, no build step.
//
// Rules this file keeps (docs/VIEWER.md explains them):
// - Every value that comes from the API is put in the page with
//   textContent or as an attribute value, never parsed as HTML.
// - The token lives in this module's memory only: not in a cookie, not in
//   localStorage or sessionStorage, not in a URL. A token handed over in the
//   URL fragment (#token=...) is taken out of the address bar at once.
// - All URLs are relative, so the page works at / and under a proxy prefix
//   such as /nself-audit/.

const PAGE_SIZE = 100;
const FILTERS = ['actor_id', 'action', 'resource_type', 'resource_id', 'outcome', 'severity', 'since', 'until'];
const OUTCOMES = ['success', 'failure', 'denied'];
const SEVERITIES = ['info', 'warning', 'error', 'critical'];
const CHART_DAYS = 60;
const STREAM_STALL_MS = 45000; // three missed heartbeats: the connection is dead
const SVG_NS = 'http://www.w3.org/2000/svg';

const $ = (id) => document.getElementById(id);

// session is {token, account, who} while signed in, else null.
let session = null;
// filters are the list filters in force, as API query parameters.
let filters = {};

class APIError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

function isAbort(e) {
  return e && e.name === 'AbortError';
}

function authHeaders(extra) {
  const h = { Authorization: 'Bearer ' + session.token };
  if (session.account) h['X-Source-Account-Id'] = session.account;
  return Object.assign(h, extra || {});
}

// api calls a JSON route of the API with the session's credentials. A 401
// after sign-in means the token was revoked or the JWT expired: the viewer
// signs out rather than show stale data.
async function api(path, opts) {
  opts = opts || {};
  const s = session;
  if (!s) throw new APIError(0, 'signed_out', 'signed out');
  const res = await fetch(path, {
    method: 'GET',
    headers: authHeaders(opts.headers),
    signal: opts.signal,
    cache: 'no-store',
    credentials: 'omit',
    referrerPolicy: 'no-referrer',
  });
  let body = null;
  const type = res.headers.get('Content-Type') || '';
  if (type.startsWith('application/json')) {
    try {
      body = await res.json();
    } catch (e) {
      if (isAbort(e)) throw e;
      body = null;
    }
  } else {
    await res.text();
  }
  if (!res.ok) {
    const err = (body && body.error) || {};
    const e = new APIError(res.status, err.code || '', err.message || 'HTTP ' + res.status);
    if (res.status === 401 && s === session && !opts.signingIn) {
      signOut('Signed out: ' + e.message);
    }
    throw e;
  }
  return body;
}

// ---------------------------------------------------------------- URL state

function readURL() {
  const q = new URLSearchParams(location.search);
  const f = {};
  for (const k of FILTERS) {
    const v = q.get(k);
    if (v) f[k] = v;
  }
  return { filters: f, account: q.get('account') || '' };
}

function writeURL(push) {
  const q = new URLSearchParams();
  if (session && session.account) q.set('account', session.account);
  for (const k of FILTERS) {
    if (filters[k]) q.set(k, filters[k]);
  }
  const s = q.toString();
  const url = location.pathname + (s ? '?' + s : '');
  if (url === location.pathname + location.search) return;
  if (push) history.pushState(null, '', url);
  else history.replaceState(null, '', url);
}

// takeFragmentToken reads #token=... (and #account=...) and removes the
// fragment from the address bar and the history entry before anything else
// happens.
function takeFragmentToken() {
  if (location.hash.length < 2) return null;
  const p = new URLSearchParams(location.hash.slice(1));
  const token = p.get('token');
  if (token === null) return null;
  history.replaceState(null, '', location.pathname + location.search);
  return { token: token, account: p.get('account') };
}

// ---------------------------------------------------------------- helpers

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined && text !== null) e.textContent = String(text);
  return e;
}

function svg(tag, attrs) {
  const e = document.createElementNS(SVG_NS, tag);
  for (const k in attrs) e.setAttribute(k, String(attrs[k]));
  return e;
}

// fmtTime shows an API time (UTC, microseconds) as "2026-11-27 07:00:04".
function fmtTime(t) {
  if (typeof t !== 'string') return '';
  return t.replace('T', ' ').replace(/\.\d+Z$/, '').replace(/Z$/, '');
}

// toInputTime turns an RFC 3339 time into a datetime-local value in UTC.
function toInputTime(v) {
  const d = new Date(v);
  if (!v || isNaN(d.getTime())) return '';
  return d.toISOString().slice(0, 19);
}

// fromInputTime turns a datetime-local value (read as UTC) into RFC 3339.
function fromInputTime(v) {
  if (!v) return '';
  return (v.length === 16 ? v + ':00' : v) + 'Z';
}

function setKV(dl, pairs) {
  const items = [];
  for (const [k, v, mono] of pairs) {
    items.push(el('dt', '', k));
    const dd = el('dd', mono ? 'mono' : '', v === '' || v === null || v === undefined ? '—' : v);
    items.push(dd);
  }
  dl.replaceChildren(...items);
}

function sleep(ms, signal) {
  return new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    if (signal) signal.addEventListener('abort', () => { clearTimeout(t); resolve(); }, { once: true });
  });
}

// ---------------------------------------------------------------- sign-in

async function signIn(token, account, fromLink) {
  const err = $('signin-error');
  err.textContent = '';
  token = (token || '').trim();
  account = (account || '').trim();
  if (!token) {
    err.textContent = 'Enter the plugin token or a Hasura JWT.';
    return;
  }
  const button = $('signin-submit');
  button.disabled = true;
  session = { token: token, account: account, who: null };
  const s = session;
  try {
    s.who = await api('auth/verify', { signingIn: true });
  } catch (e) {
    if (session === s) session = null;
    err.textContent = (e.status === 401 ? 'The token was not accepted: ' : 'Sign-in failed: ') + e.message +
      (fromLink ? ' (the token came from the link)' : '');
    return;
  } finally {
    button.disabled = false;
  }
  if (session !== s) return;
  $('token').value = '';
  showApp();
}

function signOut(message) {
  stopLive();
  resetList();
  if (verifyController) verifyController.abort();
  if (overviewController) overviewController.abort();
  session = null;
  $('live').checked = false;
  $('rows').replaceChildren();
  $('chart').replaceChildren();
  $('chain-state').replaceChildren();
  $('verify-result').replaceChildren();
  for (const id of ['stats-summary', 'stats-error', 'chain-error', 'list-status', 'list-error', 'filter-error', 'live-status', 'who']) {
    $(id).textContent = '';
  }
  if ($('detail').open) $('detail').close();
  $('app').hidden = true;
  $('who').hidden = true;
  $('signout').hidden = true;
  $('signin').hidden = false;
  $('signin-error').textContent = message || '';
  $('token').focus();
}

function showApp() {
  const who = session.who || {};
  const parts = [who.kind === 'plugin' ? 'plugin token' : 'JWT ' + (who.role || '')];
  if (who.user_id) parts.push('user ' + who.user_id);
  parts.push('account ' + (who.account_id || session.account || 'primary'));
  $('who').textContent = parts.join(' · ');
  $('who').hidden = false;
  $('signout').hidden = false;
  $('signin').hidden = true;
  $('signin-error').textContent = '';
  $('app').hidden = false;
  fillFilterForm();
  writeURL(false);
  loadOverview();
  reloadList();
  $('events-title').focus({ preventScroll: true });
}

// ---------------------------------------------------------------- filters

function fillFilterForm() {
  for (const k of FILTERS) {
    const input = $('f-' + k);
    const v = filters[k] || '';
    input.value = k === 'since' || k === 'until' ? toInputTime(v) : v;
  }
}

function readFilterForm() {
  const f = {};
  for (const k of FILTERS) {
    let v = $('f-' + k).value.trim();
    if (k === 'since' || k === 'until') v = fromInputTime(v);
    if (v) f[k] = v;
  }
  return f;
}

function applyFilters(f, push) {
  filters = f;
  $('filter-error').textContent = '';
  writeURL(push);
  reloadList();
  if ($('live').checked) startLive();
}

// ---------------------------------------------------------------- the list

// eventsById holds the events shown, for the detail and to drop duplicates
// between the list and the live tail.
const eventsById = new Map();
const list = { gen: 0, cursor: null, done: false, loading: false, controller: null };

function resetList() {
  list.gen++;
  if (list.controller) list.controller.abort();
  list.controller = null;
  list.cursor = null;
  list.done = false;
  list.loading = false;
  eventsById.clear();
  $('rows').replaceChildren();
  $('more').hidden = true;
  $('list-error').textContent = '';
}

function reloadList() {
  resetList();
  loadPage();
}

async function loadPage() {
  if (!session || list.loading || list.done) return;
  const gen = list.gen;
  list.loading = true;
  list.controller = new AbortController();
  $('list-status').textContent = 'Loading…';
  const q = new URLSearchParams(filters);
  q.set('limit', String(PAGE_SIZE));
  if (list.cursor) q.set('cursor', list.cursor);
  let body;
  try {
    body = await api('api/v1/events?' + q.toString(), { signal: list.controller.signal });
  } catch (e) {
    if (gen !== list.gen || isAbort(e) || !session) return;
    list.loading = false;
    $('list-status').textContent = '';
    if (e.status === 400) $('filter-error').textContent = e.message;
    else $('list-error').textContent = 'Could not load events: ' + e.message;
    return;
  }
  if (gen !== list.gen) return;
  list.loading = false;
  const rows = $('rows');
  const frag = document.createDocumentFragment();
  for (const ev of body.events || []) {
    if (eventsById.has(ev.id)) continue;
    eventsById.set(ev.id, ev);
    frag.appendChild(makeRow(ev, false));
  }
  rows.appendChild(frag);
  ensureRovingFocus();
  list.cursor = body.next_cursor || null;
  list.done = !list.cursor;
  $('more').hidden = list.done;
  updateListStatus();
  // A short page can leave the end of the list in view: keep filling.
  if (!list.done && nearBottom()) loadPage();
}

function updateListStatus() {
  const n = eventsById.size;
  let s = n === 0 ? 'No events match.' : n + (n === 1 ? ' event' : ' events') + ' shown, newest first';
  if (n > 0 && list.done) s += '; end of the list.';
  else if (n > 0) s += '; scroll for more.';
  $('list-status').textContent = s;
}

function nearBottom() {
  const more = $('more');
  if (more.hidden) return false;
  return more.getBoundingClientRect().top < window.innerHeight + 400;
}

function makeRow(ev, isNew) {
  const tr = document.createElement('tr');
  tr.tabIndex = -1;
  tr.dataset.id = ev.id;
  if (isNew) tr.className = 'new';
  const time = el('td', 'time', fmtTime(ev.occurred_at));
  time.title = ev.occurred_at || '';
  tr.appendChild(time);
  tr.appendChild(el('td', 'actor', ev.actor_id || '(' + (ev.actor_type || '') + ')'));
  tr.appendChild(el('td', 'action', ev.action));
  const resource = ev.resource_type ? ev.resource_type + (ev.resource_id ? ' ' + ev.resource_id : '') : ev.resource_id;
  tr.appendChild(el('td', 'resource wide', resource || ''));
  const out = el('td', 'outcome');
  out.appendChild(el('span', OUTCOMES.includes(ev.outcome) ? 'out out-' + ev.outcome : 'out', ev.outcome));
  tr.appendChild(out);
  const sev = el('td', 'severity wide');
  sev.appendChild(el('span', SEVERITIES.includes(ev.severity) ? 'sev sev-' + ev.severity : 'sev', ev.severity));
  tr.appendChild(sev);
  return tr;
}

// Rows use a roving tabindex: one row is in the tab order, the arrow keys
// move between rows, Enter opens the detail, Escape closes it.
function ensureRovingFocus() {
  const rows = $('rows');
  if (!rows.querySelector('tr[tabindex="0"]') && rows.firstElementChild) rows.firstElementChild.tabIndex = 0;
}

function markRow(tr) {
  const cur = $('rows').querySelector('tr[tabindex="0"]');
  if (cur && cur !== tr) cur.tabIndex = -1;
  tr.tabIndex = 0;
}

function focusRow(tr) {
  if (!tr) return;
  markRow(tr);
  tr.focus();
}

function rowOf(target) {
  const tr = target.closest ? target.closest('tr') : null;
  return tr && tr.parentElement === $('rows') ? tr : null;
}

function onRowsClick(e) {
  const tr = rowOf(e.target);
  if (!tr) return;
  focusRow(tr);
  openDetail(tr);
}

function onRowsKey(e) {
  const tr = rowOf(e.target);
  if (!tr) return;
  switch (e.key) {
    case 'Enter':
    case ' ':
      e.preventDefault();
      openDetail(tr);
      break;
    case 'ArrowDown':
      e.preventDefault();
      focusRow(tr.nextElementSibling);
      if (!tr.nextElementSibling) loadPage();
      break;
    case 'ArrowUp':
      e.preventDefault();
      focusRow(tr.previousElementSibling);
      break;
    case 'Home':
      e.preventDefault();
      focusRow($('rows').firstElementChild);
      break;
    case 'End':
      e.preventDefault();
      focusRow($('rows').lastElementChild);
      break;
  }
}

// ---------------------------------------------------------------- detail

let detailRow = null;

function openDetail(tr) {
  const ev = eventsById.get(tr.dataset.id);
  if (!ev) return;
  detailRow = tr;
  $('detail-title').textContent = ev.action || 'Event';
  setKV($('detail-fields'), [
    ['Id', ev.id, true],
    ['Occurred at', ev.occurred_at, true],
    ['Recorded at', ev.recorded_at, true],
    ['Actor', ev.actor_id],
    ['Actor type', ev.actor_type],
    ['Action', ev.action],
    ['Resource type', ev.resource_type],
    ['Resource id', ev.resource_id],
    ['Outcome', ev.outcome],
    ['Severity', ev.severity],
    ['IP address', ev.ip_address],
    ['User agent', ev.user_agent],
    ['Request id', ev.request_id],
    ['Source', ev.source],
    ['Account', ev.source_account_id],
  ]);
  const chain = [
    ['Sequence', ev.seq],
    ['Previous hash', ev.prev_hash, true],
    ['Hash', ev.hash, true],
  ];
  if (chainState.checkpoint) {
    const cp = chainState.checkpoint;
    chain.push(['Checkpoint', ev.seq <= cp.seq
      ? 'covered by the latest signed checkpoint (seq ' + cp.seq + ')'
      : 'after the latest signed checkpoint (seq ' + cp.seq + ')']);
  }
  setKV($('detail-chain'), chain);
  let meta;
  try {
    meta = JSON.stringify(ev.metadata === undefined ? {} : ev.metadata, null, 2);
  } catch (e) {
    meta = String(ev.metadata);
  }
  $('detail-metadata').textContent = meta;
  const d = $('detail');
  if (!d.open) d.showModal();
  // Focus the title, not the Close button: the Enter that opened the
  // detail must not also press Close.
  $('detail-title').focus();
}

// onDetailClose gives the row its focus back, unless the browser already
// did (it restores the focus of before showModal) and the user moved on.
function onDetailClose() {
  if (detailRow && detailRow.isConnected && !$('rows').contains(document.activeElement)) focusRow(detailRow);
  detailRow = null;
}

// ---------------------------------------------------------------- overview

const chainState = { checkpoint: null };
let overviewController = null;
let verifyController = null;
let lastTimeline = [];

function loadOverview() {
  if (overviewController) overviewController.abort();
  overviewController = new AbortController();
  loadStats(overviewController.signal);
  loadChain(overviewController.signal);
}

// loadStats asks for the whole account's statistics with no filters: on
// PostgreSQL that is read from the rollups, fast at any size.
async function loadStats(signal) {
  $('stats-error').textContent = '';
  let st;
  try {
    st = await api('api/v1/stats?interval=day', { signal: signal });
  } catch (e) {
    if (isAbort(e) || !session) return;
    $('stats-error').textContent = 'Could not load the statistics: ' + e.message;
    return;
  }
  const parts = [st.total + (st.total === 1 ? ' event' : ' events'), st.distinct_actors + (st.distinct_actors === 1 ? ' actor' : ' actors')];
  if (st.first_event_at) parts.push('from ' + fmtTime(st.first_event_at) + ' to ' + fmtTime(st.last_event_at) + ' UTC');
  $('stats-summary').textContent = parts.join(', ');
  lastTimeline = st.timeline || [];
  drawChart();
}

const DAY_MS = 86400000;

// drawChart draws events per day for the CHART_DAYS days that end with the
// newest day that has events, as an SVG built element by element.
function drawChart() {
  const chart = $('chart');
  const timeline = lastTimeline;
  if (!timeline.length) {
    chart.replaceChildren(el('p', 'hint', 'No events yet.'));
    return;
  }
  const counts = new Map();
  for (const b of timeline) counts.set(b.bucket.slice(0, 10), b.count);
  const end = Date.parse(timeline[timeline.length - 1].bucket.slice(0, 10) + 'T00:00:00Z');
  const days = [];
  for (let i = CHART_DAYS - 1; i >= 0; i--) {
    const day = new Date(end - i * DAY_MS).toISOString().slice(0, 10);
    days.push([day, counts.get(day) || 0]);
  }
  const max = Math.max(1, ...days.map((d) => d[1]));
  const width = Math.max(240, Math.round(chart.clientWidth || 600));
  const height = 140;
  const top = 14, bottom = 18;
  const plot = height - top - bottom;
  const step = width / days.length;
  const s = svg('svg', { viewBox: '0 0 ' + width + ' ' + height, role: 'img' });
  const title = svg('title', {});
  title.textContent = 'Events per day (UTC), ' + days[0][0] + ' to ' + days[days.length - 1][0] + ', at most ' + max + ' a day';
  s.appendChild(title);
  s.appendChild(svg('line', { class: 'axis', x1: 0, x2: width, y1: top + plot + 0.5, y2: top + plot + 0.5 }));
  days.forEach(([day, n], i) => {
    if (!n) return;
    const h = Math.max(1, Math.round((n / max) * plot));
    const r = svg('rect', { class: 'bar-rect', x: (i * step + 1).toFixed(1), y: top + plot - h, width: Math.max(1, step - 2).toFixed(1), height: h });
    const t = svg('title', {});
    t.textContent = day + ': ' + n;
    r.appendChild(t);
    s.appendChild(r);
  });
  const label = (x, y, text, anchor) => {
    const t = svg('text', { x: x, y: y, 'text-anchor': anchor });
    t.textContent = text;
    s.appendChild(t);
  };
  label(0, height - 4, days[0][0], 'start');
  label(width, height - 4, days[days.length - 1][0], 'end');
  label(width, 10, 'max ' + max + '/day', 'end');
  chart.replaceChildren(s);
}

// readsChain tells whether the caller may read the whole chain: the plugin
// token and the admin roles (the API answers 403 to anyone else).
function readsChain() {
  const who = (session && session.who) || {};
  return who.kind === 'plugin' || who.role === 'admin' || who.role === 'nself_admin';
}

async function loadChain(signal) {
  $('chain-error').textContent = '';
  chainState.checkpoint = null;
  const state = $('chain-state');
  state.replaceChildren();
  $('verify').hidden = !readsChain();
  if (!readsChain()) {
    setKV(state, [['Chain', 'shown to the plugin token and admin roles only']]);
    return;
  }
  let cp;
  try {
    cp = await api('api/v1/checkpoints/latest', { signal: signal });
  } catch (e) {
    if (isAbort(e) || !session) return;
    if (e.status === 404) {
      setKV(state, [['Latest checkpoint', 'none signed yet']]);
    } else if (e.status === 403) {
      setKV(state, [['Chain', 'shown to the plugin token and admin roles only']]);
      $('verify').hidden = true;
    } else {
      $('chain-error').textContent = 'Could not load the latest checkpoint: ' + e.message;
    }
    return;
  }
  chainState.checkpoint = cp;
  setKV(state, [
    ['Latest checkpoint', 'seq ' + cp.seq],
    ['Head hash', cp.hash, true],
    ['Signed at', cp.created_at, true],
    ['Key id', cp.key_id, true],
    ['Signature', cp.signature, true],
  ]);
}

async function verifyNow() {
  const button = $('verify');
  const out = $('verify-result');
  if (verifyController) verifyController.abort();
  verifyController = new AbortController();
  button.disabled = true;
  out.replaceChildren(el('p', 'hint', 'Verifying the whole chain…'));
  let r;
  try {
    r = await api('api/v1/verify', { signal: verifyController.signal });
  } catch (e) {
    if (isAbort(e)) return;
    out.replaceChildren(el('p', 'error', 'Could not verify: ' + e.message));
    return;
  } finally {
    button.disabled = false;
  }
  const head = r.head || {};
  const items = [];
  if (r.ok) {
    items.push(el('p', 'ok', 'Verified: ' + r.checked + (r.checked === 1 ? ' event' : ' events') + ' checked.'));
  } else {
    items.push(el('p', 'broken', 'Broken at seq ' + r.first_broken_seq + ': ' + r.reason));
  }
  const dl = el('dl', 'kv');
  setKV(dl, [['Head seq', head.seq], ['Head hash', head.hash, true]]);
  items.push(dl);
  out.replaceChildren(...items);
}

// ---------------------------------------------------------------- live tail

// The live tail reads GET api/v1/events/stream with fetch, since
// EventSource cannot send an Authorization header, and parses the
// Server-Sent Events itself. After a dropped connection it reconnects with
// Last-Event-ID, so no event is lost or repeated.
let live = null;

function setLiveStatus(text, state) {
  const s = $('live-status');
  s.textContent = text;
  s.dataset.state = state;
}

function stopLive() {
  if (!live) return;
  live.controller.abort();
  live = null;
  setLiveStatus('', 'off');
}

function startLive() {
  stopLive();
  const l = { controller: new AbortController(), lastId: null, retries: 0, received: 0 };
  live = l;
  runLive(l).catch((e) => {
    if (live === l && !isAbort(e)) setLiveStatus('Live tail stopped: ' + e.message, 'error');
  });
}

async function runLive(l) {
  const q = new URLSearchParams(filters);
  const path = 'api/v1/events/stream' + (q.toString() ? '?' + q.toString() : '');
  while (live === l && session) {
    setLiveStatus(l.retries ? 'Live: reconnecting…' : 'Live: connecting…', 'connecting');
    const conn = new AbortController();
    const stop = () => conn.abort();
    l.controller.signal.addEventListener('abort', stop, { once: true });
    let res = null;
    try {
      const extra = { Accept: 'text/event-stream' };
      if (l.lastId !== null) extra['Last-Event-ID'] = l.lastId;
      res = await fetch(path, { headers: authHeaders(extra), signal: conn.signal, cache: 'no-store', credentials: 'omit', referrerPolicy: 'no-referrer' });
      if (live !== l) return;
      if (!res.ok) {
        let msg = 'HTTP ' + res.status;
        try {
          const b = await res.json();
          if (b && b.error && b.error.message) msg = b.error.message;
        } catch (e) { /* not JSON */ }
        if (res.status < 500) {
          $('live').checked = false;
          live = null;
          setLiveStatus('Live tail refused: ' + msg, 'error');
          if (res.status === 401) signOut('Signed out: ' + msg);
          return;
        }
        throw new Error(msg);
      }
      l.retries = 0;
      setLiveStatus(liveText(l), 'connected');
      await readSSE(res.body, conn, (frame) => onFrame(l, frame));
    } catch (e) {
      // A network error or the watchdog: reconnect below.
      if (live !== l) return;
    } finally {
      l.controller.signal.removeEventListener('abort', stop);
      conn.abort();
    }
    if (live !== l) return;
    setLiveStatus('Live: connection lost; reconnecting…', 'connecting');
    l.retries++;
    await sleep(Math.min(30000, 500 * 2 ** Math.min(l.retries, 6)), l.controller.signal);
  }
}

function liveText(l) {
  return 'Live: connected' + (l.received ? ', ' + l.received + ' new' : '');
}

// readSSE parses a text/event-stream body into frames {id, event, data}.
// A watchdog aborts the connection when nothing, not even a heartbeat,
// arrives for STREAM_STALL_MS.
async function readSSE(body, conn, onFrameCb) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buf = '';
  let frame = { id: null, event: '', data: [] };
  let watchdog = setTimeout(() => conn.abort(), STREAM_STALL_MS);
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      clearTimeout(watchdog);
      watchdog = setTimeout(() => conn.abort(), STREAM_STALL_MS);
      buf += decoder.decode(value, { stream: true });
      for (;;) {
        const m = /\r\n|\n|\r/.exec(buf);
        if (!m) break;
        // A CR at the very end may be the first half of a CRLF.
        if (m[0] === '\r' && m.index === buf.length - 1) break;
        const line = buf.slice(0, m.index);
        buf = buf.slice(m.index + m[0].length);
        if (line === '') {
          if (frame.id !== null || frame.data.length) onFrameCb(frame);
          frame = { id: null, event: '', data: [] };
          continue;
        }
        if (line[0] === ':') continue; // a comment: the heartbeat
        const i = line.indexOf(':');
        const field = i < 0 ? line : line.slice(0, i);
        let v = i < 0 ? '' : line.slice(i + 1);
        if (v[0] === ' ') v = v.slice(1);
        if (field === 'id' && !v.includes('\0')) frame.id = v;
        else if (field === 'event') frame.event = v;
        else if (field === 'data') frame.data.push(v);
      }
    }
  } finally {
    clearTimeout(watchdog);
    reader.cancel().catch(() => {});
  }
}

function onFrame(l, frame) {
  if (live !== l) return;
  if (frame.id !== null) l.lastId = frame.id;
  if (frame.event !== 'event' || !frame.data.length) return;
  let ev;
  try {
    ev = JSON.parse(frame.data.join('\n'));
  } catch (e) {
    return;
  }
  if (!ev || typeof ev.id !== 'string' || eventsById.has(ev.id)) return;
  eventsById.set(ev.id, ev);
  const rows = $('rows');
  rows.insertBefore(makeRow(ev, true), rows.firstElementChild);
  ensureRovingFocus();
  l.received++;
  setLiveStatus(liveText(l), 'connected');
  updateListStatus();
}

// ---------------------------------------------------------------- wiring

function init() {
  const url = readURL();
  filters = url.filters;
  $('account').value = url.account;

  $('signin-form').addEventListener('submit', (e) => {
    e.preventDefault();
    signIn($('token').value, $('account').value, false);
  });
  $('signout').addEventListener('click', () => signOut(''));
  $('filters').addEventListener('submit', (e) => {
    e.preventDefault();
    applyFilters(readFilterForm(), true);
  });
  for (const id of ['f-outcome', 'f-severity']) {
    $(id).addEventListener('change', () => applyFilters(readFilterForm(), true));
  }
  $('clear').addEventListener('click', () => {
    for (const k of FILTERS) $('f-' + k).value = '';
    applyFilters({}, true);
  });
  $('live').addEventListener('change', (e) => {
    if (e.target.checked) startLive();
    else stopLive();
  });
  $('verify').addEventListener('click', verifyNow);
  $('more').addEventListener('click', loadPage);
  $('rows').addEventListener('click', onRowsClick);
  $('rows').addEventListener('keydown', onRowsKey);
  $('rows').addEventListener('focusin', (e) => {
    const tr = rowOf(e.target);
    if (tr) markRow(tr);
  });
  $('detail').addEventListener('close', onDetailClose);
  $('detail-close').addEventListener('click', () => $('detail').close());
  // A click on the backdrop (outside the dialog's box) closes it too.
  $('detail').addEventListener('click', (e) => {
    if (e.target === $('detail')) {
      const r = $('detail').getBoundingClientRect();
      if (e.clientX < r.left || e.clientX > r.right || e.clientY < r.top || e.clientY > r.bottom) $('detail').close();
    }
  });
  window.addEventListener('popstate', () => {
    if (!session) return;
    filters = readURL().filters;
    fillFilterForm();
    reloadList();
    if ($('live').checked) startLive();
  });
  let resizeTimer = 0;
  window.addEventListener('resize', () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => { if (session) drawChart(); }, 150);
  });
  if ('IntersectionObserver' in window) {
    new IntersectionObserver((entries) => {
      if (entries.some((e) => e.isIntersecting)) loadPage();
    }, { rootMargin: '400px' }).observe($('more'));
  }

  const fromLink = takeFragmentToken();
  if (fromLink) {
    if (fromLink.account) $('account').value = fromLink.account;
    signIn(fromLink.token, $('account').value, true);
  } else {
    $('token').focus();
  }
}

init();
