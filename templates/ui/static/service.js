// A service's page: its URLs, replicas (with their health) updated live from
// /api/v1/events, domains with their certificates' status, the traffic
// through the ingress, logs of every running replica followed live, an
// interactive console (term.js over the exec websocket), builds with steps
// and logs, actions and settings.
import { $, h, api, seg, wsUrl, onSubmit, confirmDialog, toast, badge, when, fillTable, events, debounce, showError, clearErrors } from './lb.js';
import { buildSpecForm, readSpec, fillSpec, portText } from './specform.js';

const P = document.body.dataset.project;
const S = document.body.dataset.service;
const base = `/projects/${seg(P)}/services/${seg(S)}`;
let svc = null;
let replicas = [];
let nodeNames = {};
const short = (id) => (id || '').slice(-6).toLowerCase();
// Scaling above this many replicas (and to more than twice as many) asks first.
const SCALE_CONFIRM = 20;

// ---- the service and its actions ----

async function loadService() {
  try {
    svc = await api('GET', base);
  } catch (e) {
    $('#service-name').textContent = e.status === 404 ? `Service "${S}" not found` : e.message;
    return;
  }
  const st = svc.status || {};
  const paused = svc.spec.state === 'paused';
  const state = $('#service-state');
  // The state the API computed from the replicas and the rollout (the same
  // words as lbc), and why.
  state.replaceWith(h('span', { id: 'service-state', class: `badge ${st.state || 'unknown'}`, title: st.detail || '' }, st.label || st.state || 'unknown'));
  let detail = $('#service-detail');
  if (!detail) $('#service-image').before(detail = h('p', { id: 'service-detail' }));
  detail.textContent = [st.detail, st.reason && !(st.detail || '').includes(st.reason) ? st.reason : ''].filter(Boolean).join('; ');
  detail.hidden = !detail.textContent;
  $('#service-image').textContent = svc.spec.image || (svc.spec.source ? `${svc.spec.source.url} (${svc.spec.source.branch || 'default branch'}), not built yet` : '');
  const scale = $('#scale-replicas');
  if (document.activeElement !== scale) scale.value = svc.spec.replicas;
  $('#pause').hidden = paused;
  $('#resume').hidden = !paused;
  $('#deploy').hidden = !svc.spec.source;
  $('#builds-card').hidden = !svc.spec.source;
  showUrls();
}

function showUrls() {
  const urls = svc.urls || [];
  const list = $('#urls');
  if (urls.length) {
    list.replaceChildren(...urls.map((u) => h('li', {}, h('a', { href: u, target: '_blank', rel: 'noopener noreferrer' }, u))));
    return;
  }
  const tcp = (svc.spec.ports || []).filter((p) => p.protocol !== 'udp');
  const hint = !svc.spec.ingress_port && tcp.length !== 1
    ? (tcp.length ? 'It has several ports: choose the one for web traffic as the ingress port in Settings.' : 'It publishes no port: add the port it listens on in Settings.')
    : 'Add a domain below (or start lb with --base-domain for a generated name).';
  list.replaceChildren(h('li', { class: 'muted' }, `No URL yet. ${hint}`));
}

async function action(name, body) {
  try {
    await api('POST', `${base}/${name}`, body);
    toast(`${name[0].toUpperCase() + name.slice(1)}: requested`);
    await loadService();
  } catch (e) {
    toast(e.message, 'error');
  }
}
$('#restart').addEventListener('click', () => action('restart'));
$('#pause').addEventListener('click', () => action('pause'));
$('#resume').addEventListener('click', () => action('resume'));
$('#deploy').addEventListener('click', async () => {
  try {
    const b = await api('POST', `${base}/builds`, { commit: null });
    toast(`Build #${b.number} queued`);
    await loadBuilds();
    showBuild(b.number);
  } catch (e) {
    toast(e.message, 'error');
  }
});
$('#delete-service').addEventListener('click', async () => {
  if (!(await confirmDialog(`Delete service "${svc ? svc.name : S}" and its replicas? This cannot be undone.`))) return;
  try {
    await api('DELETE', base);
    location.href = '/projects/' + seg(P);
  } catch (e) {
    toast(e.message, 'error');
  }
});
const scaleForm = $('#scale-form');
scaleForm.addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const err = $('#scale-form-error');
  err.textContent = '';
  const n = parseInt($('#scale-replicas').value, 10);
  if (Number.isNaN(n)) { err.textContent = 'replicas: must be a number'; return; }
  // A slip of the keyboard (1000 for 10) is asked about before it is sent.
  const now = svc ? svc.spec.replicas : 0;
  if (n > SCALE_CONFIRM && n > now * 2 &&
      !(await confirmDialog(`Scale "${svc ? svc.name : S}" from ${now} to ${n} replicas? Each reserves ${svc ? svc.spec.memory : '?'} MiB.`, `Scale to ${n}`))) return;
  try {
    await api('POST', `${base}/scale`, { replicas: n });
    toast(`Scaling to ${n}`);
    await loadService();
  } catch (e) {
    err.textContent = e.message;
  }
});

// ---- replicas, live ----

// Only an admin may list nodes: others see node ids, asked for once.
let nodesRefused = false;
async function loadNodes() {
  if (nodesRefused) return;
  try {
    const list = await api('GET', '/nodes');
    nodeNames = Object.fromEntries(list.items.map((n) => [n.id, n.name]));
  } catch { nodesRefused = true; /* ids then */ }
}

async function loadReplicas() {
  let list;
  try {
    list = await api('GET', `${base}/replicas`);
  } catch (e) {
    return;
  }
  replicas = list.items;
  if (replicas.some((r) => r.node && !nodeNames[r.node])) await loadNodes();
  // On a phone each row is a card: cells name themselves (data-label).
  fillTable($('#replicas'), replicas.map((r) => h('tr', { dataset: { id: r.id, state: r.state } },
    h('td', { class: 'mono', title: r.id, 'data-label': 'Replica' }, short(r.id)),
    h('td', { 'data-label': 'Node' }, r.node ? nodeNames[r.node] || r.node : '—'),
    h('td', { 'data-label': 'State' }, badge(r.state)),
    h('td', { 'data-label': 'Health' }, r.health ? Object.assign(badge(r.health), { title: r.health_message || r.health }) : h('span', { class: 'muted', title: 'no health check' }, '—')),
    h('td', { class: 'mono', 'data-label': 'Host ports' }, (r.ports || []).map(portText).join(', ')),
    h('td', { 'data-label': 'Restarts' }, String(r.restarts ?? 0)),
    h('td', { class: 'muted', 'data-label': 'Message' }, [r.message,
      r.exit_code === undefined || r.exit_code === null || (r.message || '').includes(`code ${r.exit_code}`) ? '' : `last exit code ${r.exit_code}${r.oom_killed ? ' (out of memory)' : ''}`]
      .filter(Boolean).join('; ')))), 'No replicas.');
  const sel = $('#console-replica');
  const chosen = sel.value;
  sel.replaceChildren(h('option', { value: '' }, 'any replica'),
    ...replicas.filter((r) => r.state === 'running').map((r) => h('option', { value: r.id, selected: r.id === chosen }, short(r.id))));
  followLogs();
}

// ---- domains and their certificates ----

async function loadDomains() {
  let list;
  try {
    list = await api('GET', `${base}/domains`);
  } catch {
    return;
  }
  fillTable($('#domains'), list.map((d) => {
    const c = d.certificate;
    const expires = c && c.not_after ? when(c.not_after) : '';
    return h('tr', { dataset: { domain: d.domain } },
      h('td', { class: 'mono' }, d.domain),
      h('td', {}, c ? Object.assign(badge(c.status), { title: `${c.source}${c.names && c.names.length ? ': ' + c.names.join(', ') : ''}` }) : h('span', { class: 'muted' }, 'none')),
      h('td', {}, expires),
      h('td', { class: 'error-text' }, c && c.error ? c.error : ''),
      h('td', { class: 'actions' },
        h('button', { type: 'button', class: 'secondary', onclick: () => removeDomain(d.domain) }, 'Remove')));
  }), 'No domains.');
}

async function removeDomain(d) {
  if (!(await confirmDialog(`Stop routing ${d} to this service? Its certificate is removed too.`, 'Remove'))) return;
  try {
    await api('DELETE', `${base}/domains/${seg(d)}`);
    toast(`${d} removed`);
  } catch (e) {
    toast(e.message, 'error');
  }
  await loadDomains();
  await loadService();
  refillSpec();
}

const domainForm = $('#domain-form');
onSubmit(domainForm, async () => {
  const input = $('#domain-input');
  const domain = input.value.trim();
  if (!domain) throw Object.assign(new Error('domain: give a host name, e.g. app.example.com'), { field: 'domain' });
  await api('POST', `${base}/domains`, { domain });
  input.value = '';
  toast(`${domain} added`);
  await loadDomains();
  await loadService();
  refillSpec();
});

// ---- traffic through the ingress ----

const ms = (s) => (s === null || s === undefined ? '—' : s < 1 ? `${(s * 1000).toFixed(1)} ms` : `${s.toFixed(2)} s`);

async function loadIngress() {
  let st;
  try {
    const res = await fetch(`/ui/projects/${seg(P)}/services/${seg(S)}/ingress`, { credentials: 'same-origin' });
    if (!res.ok) return;
    st = await res.json();
  } catch {
    return;
  }
  const item = (k, v) => h('div', { dataset: { stat: k } }, h('dt', {}, k), h('dd', {}, v));
  const classes = ['2xx', '3xx', '4xx', '5xx'].map((c) => item(c, String(st.requests[c] || 0)));
  $('#ingress').replaceChildren(item('requests', String(st.total)), ...classes, item('p50', ms(st.p50)), item('p99', ms(st.p99)));
}
$('#ingress-refresh').addEventListener('click', loadIngress);

// ---- logs of every running replica ----

const logs = $('#logs');
const streams = new Map();
const MAX_LINES = 5000;
// Every line received (bounded); the pane shows those the filter matches.
let logLines = [];
const logFilter = $('#logs-filter');

const matches = (line) => !logFilter.value || line.toLowerCase().includes(logFilter.value.toLowerCase());

function appendLog(text) {
  const follow = $('#logs-follow').checked;
  const lines = text.split(/(?<=\n)/);
  logLines.push(...lines);
  if (logLines.length > MAX_LINES) {
    logLines = logLines.slice(-MAX_LINES / 2);
    renderLogs();
  } else {
    logs.append(lines.filter(matches).join(''));
  }
  if (follow) logs.scrollTop = logs.scrollHeight;
}

function renderLogs() {
  logs.textContent = logLines.filter(matches).join('');
  if ($('#logs-follow').checked) logs.scrollTop = logs.scrollHeight;
}
logFilter.addEventListener('input', debounce(renderLogs, 150));

// A replica that crashed or exited: its last output (Docker keeps the
// container's earlier runs), once per restart, with how it ended.
const lastShown = new Map();
async function showLastOutput(r) {
  const key = `${r.restarts}/${r.exit_code}`;
  if (lastShown.get(r.id) === key || !r.node) return;
  lastShown.set(r.id, key);
  let text = '';
  try {
    const res = await fetch(`/api/v1${base}/logs?tail=50&replica=${seg(r.id)}${stamps()}`, { credentials: 'same-origin' });
    text = res.ok ? await res.text() : '';
  } catch { /* the node is gone: the header still says how it ended */ }
  const how = r.exit_code === undefined || r.exit_code === null ? r.state : `exited with code ${r.exit_code}${r.oom_killed ? ' (out of memory)' : ''}`;
  const tag = `[${short(r.id)}] `;
  const body = text ? text.replace(/\n$/, '').split('\n').map((l) => tag + l + '\n').join('') : `${tag}(no output)\n`;
  appendLog(`${tag}── ${how}, restarted ${r.restarts} times; its last output: ──\n${body}`);
}

function followLogs() {
  for (const r of replicas) {
    if (r.state === 'exited' || r.state === 'failed') showLastOutput(r);
  }
  for (const r of replicas) {
    if (r.state !== 'running' || streams.has(r.id)) continue;
    // A crashed replica's last output is already shown: only what is new.
    const tail = lastShown.has(r.id) ? 0 : 100;
    const ws = new WebSocket(wsUrl(`${base}/logs?follow=true&tail=${tail}&replica=${seg(r.id)}${stamps()}`));
    ws.binaryType = 'arraybuffer';
    const dec = new TextDecoder();
    let partial = '';
    const tag = `[${short(r.id)}] `;
    streams.set(r.id, ws);
    ws.onmessage = (m) => {
      if (typeof m.data === 'string') {
        try {
          const c = JSON.parse(m.data);
          if (c.error) appendLog(`${tag}(${c.error.message})\n`);
        } catch { /* not control */ }
        return;
      }
      const text = partial + dec.decode(m.data, { stream: true });
      const parts = text.split('\n');
      partial = parts.pop();
      if (parts.length) appendLog(parts.map((l) => tag + l + '\n').join(''));
    };
    ws.onclose = () => {
      if (partial) appendLog(tag + partial + '\n');
      setTimeout(() => streams.delete(r.id), 3000);
    };
  }
}
$('#logs-clear').addEventListener('click', () => { logLines = []; logs.textContent = ''; });
const stamps = () => ($('#logs-timestamps').checked ? '&timestamps=true' : '');
// With or without times, the output is read again from the start.
$('#logs-timestamps').addEventListener('change', () => {
  for (const ws of streams.values()) { ws.onclose = null; ws.close(); }
  streams.clear();
  lastShown.clear();
  logLines = [];
  logs.textContent = '';
  followLogs();
});

// ---- console ----

let term = null;
let execWs = null;
const enc = new TextEncoder();

function closeConsole() {
  if (execWs) execWs.close();
  execWs = null;
  $('#console-connect').hidden = false;
  $('#console-close').hidden = true;
}

/** How many columns fit the console's width. */
function termCols(el) {
  const probe = h('span', { class: 'term-probe' }, 'M'.repeat(50));
  el.append(probe);
  const charWidth = probe.getBoundingClientRect().width / 50 || 8;
  probe.remove();
  return Math.max(20, Math.min(200, Math.floor((el.clientWidth - 32) / charWidth)));
}

// The terminal follows the window's width (the shell is told the new size).
window.addEventListener('resize', debounce(() => {
  if (!term || !execWs || execWs.readyState !== WebSocket.OPEN) return;
  const cols = termCols($('#console'));
  if (cols === term.cols) return;
  term.resize(cols, term.rows);
  execWs.send(JSON.stringify({ resize: { cols, rows: term.rows } }));
}, 200));

function openConsole(command, fallback) {
  const el = $('#console');
  if (!window.Terminal) {
    $('#console-status').textContent = 'The terminal library (term.js) is not installed on the server.';
    return;
  }
  if (term) term.destroy();
  el.replaceChildren();
  const cols = termCols(el);
  const rows = 20;
  term = new window.Terminal({ cols, rows, useStyle: true, screenKeys: false, cursorBlink: true });
  term.open(el);
  const dec = new TextDecoder();
  const ws = new WebSocket(wsUrl(`${base}/exec`));
  ws.binaryType = 'arraybuffer';
  execWs = ws;
  const started = Date.now();
  $('#console-connect').hidden = true;
  $('#console-close').hidden = false;
  $('#console-status').textContent = 'Connecting…';
  ws.onopen = () => {
    const replica = $('#console-replica').value || null;
    ws.send(JSON.stringify({ command, tty: true, stdin: true, replica, cols, rows }));
    $('#console-status').textContent = `Connected to ${command.join(' ')}: type in the terminal (Close to end).`;
    term.focus();
  };
  term.on('data', (d) => {
    if (ws.readyState !== WebSocket.OPEN) return;
    const bytes = enc.encode(d);
    const frame = new Uint8Array(bytes.length + 1);
    frame[0] = 0;
    frame.set(bytes, 1);
    ws.send(frame);
  });
  ws.onmessage = (m) => {
    if (typeof m.data === 'string') {
      let c = {};
      try { c = JSON.parse(m.data); } catch { return; }
      if ('exit_code' in c) {
        // No such shell in the image: try busybox's.
        if (fallback && (c.exit_code === 126 || c.exit_code === 127) && Date.now() - started < 5000) {
          ws.onclose = null;
          ws.close();
          openConsole(fallback, null);
          return;
        }
        term.write(`\r\n[exited with code ${c.exit_code}]\r\n`);
        $('#console-status').textContent = `The shell exited with code ${c.exit_code}.`;
      } else if (c.error) {
        if (fallback && /no such file|not found|executable/i.test(c.error.message || '')) {
          ws.onclose = null;
          ws.close();
          openConsole(fallback, null);
          return;
        }
        term.write(`\r\n[${c.error.message}]\r\n`);
        $('#console-status').textContent = c.error.message;
      }
      return;
    }
    const b = new Uint8Array(m.data);
    if (b.length) term.write(dec.decode(b.subarray(1), { stream: true }));
  };
  ws.onclose = () => { closeConsole(); };
}

$('#console-connect').addEventListener('click', () => {
  const command = $('#console-command').value.trim().split(/\s+/).filter(Boolean);
  if (!command.length) command.push('/bin/sh');
  const fallback = command.join(' ') === '/bin/sh' ? ['/bin/busybox', 'sh'] : null;
  openConsole(command, fallback);
});
$('#console-close').addEventListener('click', closeConsole);

// ---- deploys: which version is live, which is coming, and the history ----

const outcomeWord = { in_progress: 'deploying', rolled_out: 'running', halted: 'failed', superseded: 'stopped' };
const deployBadge = (d) => Object.assign(badge(outcomeWord[d.outcome] || d.outcome), { textContent: d.outcome.replace('_', ' ') });

async function loadDeploys() {
  let list;
  try {
    list = await api('GET', `${base}/deploys`);
  } catch {
    return;
  }
  const st = (svc && svc.status) || {};
  const what = (d) => `generation ${d.generation} (${d.cause}, by ${d.by})`;
  $('#deploys-now').textContent = [
    st.live ? `Live: ${what(st.live)}.` : 'Nothing rolled out yet.',
    st.coming ? `Coming: ${what(st.coming)}, ${st.coming.outcome.replace('_', ' ')}${st.coming.reason ? ': ' + st.coming.reason : ''}.` : '',
  ].filter(Boolean).join(' ');
  fillTable($('#deploys'), (list.items || []).map((d) => h('tr', { dataset: { generation: d.generation, outcome: d.outcome } },
    h('td', { 'data-label': 'Generation' }, String(d.generation)),
    h('td', { 'data-label': 'Outcome' }, deployBadge(d)),
    h('td', { 'data-label': 'Cause' }, d.cause),
    h('td', { 'data-label': 'By' }, d.by),
    h('td', { 'data-label': 'Started' }, when(d.started)),
    h('td', { 'data-label': 'Took' }, d.finished ? `${Math.max(0, d.finished - d.started)} s` : '…'),
    h('td', { class: 'muted', 'data-label': 'Reason' }, d.reason || ''))), 'No deploys yet.');
}

// ---- builds ----

let shownBuild = null;
const FINAL = ['succeeded', 'failed', 'canceled'];
// Step times are Unix seconds (or milliseconds: told apart by size).
const seconds = (a, b) => Math.max(0, a > 1e11 ? (b - a) / 1000 : b - a).toFixed(0);
let buildWs = null;

async function loadBuilds() {
  if (!svc || !svc.spec.source) return;
  let list;
  try {
    list = await api('GET', `${base}/builds`);
  } catch {
    return;
  }
  const items = (list.items || []).slice().sort((a, b) => b.number - a.number);
  fillTable($('#builds'), items.map((b) => h('tr', { dataset: { number: b.number } },
    h('td', { 'data-label': 'Build' }, h('button', { type: 'button', class: 'link', onclick: () => showBuild(b.number) }, `#${b.number}`)),
    h('td', { 'data-label': 'Status' }, badge(b.status)),
    h('td', { class: 'mono', 'data-label': 'Commit' }, (b.commit || '').slice(0, 10)),
    h('td', { 'data-label': 'Started' }, when(b.created)),
    h('td', { class: 'steps', 'data-label': 'Steps' }, (b.steps || []).map((s) => `${s.name.replace('_', ' ')} ${s.finished ? seconds(s.started, s.finished) + ' s' : '…'}`).join(' → ')),
    h('td', { class: 'actions' },
      !FINAL.includes(b.status)
        ? h('button', { type: 'button', class: 'secondary', onclick: () => cancelBuild(b.number) }, 'Cancel') : null,
      b.status === 'succeeded'
        ? h('button', { type: 'button', class: 'secondary', onclick: () => rollback(b.number) }, 'Roll back to this') : null))),
  'No builds yet: Deploy builds the branch head.');
}

async function cancelBuild(n) {
  try { await api('POST', `${base}/builds/${n}/cancel`); toast(`Build #${n} canceled`); } catch (e) { toast(e.message, 'error'); }
  loadBuilds();
}
async function rollback(n) {
  if (!(await confirmDialog(`Roll back to build #${n}'s image?`, 'Roll back'))) return;
  try { await api('POST', `${base}/rollback`, { build: n }); toast(`Rolling back to build #${n}`); } catch (e) { toast(e.message, 'error'); }
  loadService();
}

function showBuild(n) {
  if (buildWs) buildWs.close();
  shownBuild = n;
  $('#build-detail').hidden = false;
  $('#build-title').textContent = `Build #${n}`;
  const out = $('#build-logs');
  out.textContent = '';
  const ws = new WebSocket(wsUrl(`${base}/builds/${n}/logs`));
  ws.binaryType = 'arraybuffer';
  buildWs = ws;
  const dec = new TextDecoder();
  ws.onmessage = (m) => {
    if (typeof m.data === 'string') {
      try {
        const c = JSON.parse(m.data);
        if (c.status) out.append(`\n[build ${c.status}]\n`);
        if (c.error) out.append(`\n[${c.error.message}]\n`);
      } catch { /* not control */ }
    } else {
      out.append(dec.decode(m.data, { stream: true }));
    }
    out.scrollTop = out.scrollHeight;
    if (typeof m.data === 'string') loadBuilds();
  };
}

// ---- settings ----

const specForm = $('#spec-form');
buildSpecForm(specForm, { create: false });
// The form follows live changes until you edit it; a save is checked against
// the revision it was filled from (409 if someone changed the service since).
let edited = false;
let shown = null;
specForm.addEventListener('input', () => { edited = true; });
function refillSpec() {
  if (edited || !svc) return;
  fillSpec(specForm, svc.spec);
  shown = svc;
}
onSubmit(specForm, async () => {
  const form = readSpec(specForm);
  const spec = { ...shown.spec, ...form };
  if (form.source && shown.spec.image) spec.image = shown.spec.image;
  if (!form.source) spec.source = null;
  try {
    svc = await api('PUT', base, spec, { 'If-Match': String(shown.revision) });
  } catch (e) {
    if (e.status === 409) e.message = 'the service changed since this form was filled (your input is kept): reload the page to see the changes';
    throw e;
  }
  edited = false;
  toast('Settings saved: replicas roll out one at a time');
  await loadService();
});
void showError; void clearErrors; void shownBuild;

// ---- start ----

await loadService();
if (svc) {
  refillSpec();
  await loadNodes();
  await loadReplicas();
  await loadBuilds();
  await loadDeploys();
  await loadDomains();
  await loadIngress();
  const refresh = debounce(async () => { await loadService(); refillSpec(); await loadReplicas(); await loadDeploys(); await loadDomains(); }, 150);
  const refreshBuilds = debounce(loadBuilds, 300);
  events((ev) => {
    if (ev.type === 'snapshot') return refresh();
    if (ev.service !== svc.id) return;
    if (ev.kind === 'build') refreshBuilds();
    else refresh();
  });
}
