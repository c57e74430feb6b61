// Shared helpers of the web UI's pages: API calls with the session cookie
// and CSRF header, errors beside fields, the live events socket, dialogs.

export const csrf = document.querySelector('meta[name="csrf-token"]')?.content || '';
export const $ = (sel, root = document) => root.querySelector(sel);
export const $$ = (sel, root = document) => [...root.querySelectorAll(sel)];

/** An element with attributes and children (text is never parsed as HTML). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

/** An API error: HTTP status, code, message and the field at fault. */
export class ApiError extends Error {
  constructor(status, error) {
    super(error?.message || `request failed (${status})`);
    this.status = status;
    this.code = error?.code || 'error';
    this.field = error?.field || null;
  }
}

/** Calls `/api/v1` + path; answers the JSON body or throws an ApiError. */
export async function api(method, path, body, headers = {}) {
  const opts = { method, headers: { ...headers }, credentials: 'same-origin' };
  if (method !== 'GET' && method !== 'HEAD') opts.headers['X-CSRF-Token'] = csrf;
  if (body !== undefined) {
    opts.headers['Content-Type'] = 'application/json';
    opts.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch('/api/v1' + path, opts);
  } catch (e) {
    throw new ApiError(0, { code: 'network', message: 'the server cannot be reached: ' + e.message });
  }
  if (res.status === 401 && csrf) {
    location.href = '/login';
  }
  if (res.status === 204) return null;
  let data = null;
  try { data = await res.json(); } catch { data = null; }
  if (!res.ok) throw new ApiError(res.status, data?.error);
  return data;
}

/** Path segment escaping. */
export const seg = (s) => encodeURIComponent(s);

/** The websocket URL of an API path. */
export function wsUrl(path) {
  return (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/api/v1' + path;
}

/** Clears the errors shown in a form. */
export function clearErrors(form) {
  for (const p of $$('.error', form)) p.textContent = '';
  for (const i of $$('[aria-invalid]', form)) i.removeAttribute('aria-invalid');
}

/** The input of a form an API error's field concerns (the closest match). */
function inputFor(form, field) {
  if (!field) return null;
  let f = field;
  while (f) {
    const el = form.querySelector(`[data-field="${CSS.escape(f)}"]`);
    if (el) return el;
    const cut = Math.max(f.lastIndexOf('.'), f.lastIndexOf('['));
    f = cut > 0 ? f.slice(0, cut) : '';
  }
  return null;
}

/** Shows an error beside the field it concerns (else at the form's end);
 * nothing typed is touched. */
export function showError(form, err) {
  const input = inputFor(form, err.field);
  const where = input && (document.getElementById(input.id + '-error') || input.closest('div')?.querySelector('.error'));
  if (input && where) {
    where.textContent = err.message;
    input.setAttribute('aria-invalid', 'true');
    input.setAttribute('aria-describedby', where.id || '');
    input.focus();
  } else {
    const p = $('.form-error', form) || form.parentElement.querySelector('.form-error');
    if (p) p.textContent = err.message;
    else toast(err.message, 'error');
  }
}

/** Runs a form's submit: clears errors, disables the button while waiting,
 * shows an error beside its field. */
export function onSubmit(form, handler) {
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    clearErrors(form);
    const buttons = $$('button[type="submit"], button:not([type])', form);
    buttons.forEach((b) => (b.disabled = true));
    try {
      await handler(new FormData(form));
    } catch (err) {
      if (err instanceof ApiError) showError(form, err);
      else showError(form, { message: err.message, field: err.field || null });
    } finally {
      buttons.forEach((b) => (b.disabled = false));
    }
  });
}

/** A field error raised before anything is sent. */
export function fieldError(field, message) {
  const e = new Error(message);
  e.field = field;
  return e;
}

let toastTimer;
/** A short message at the bottom of the page. */
export function toast(message, kind = 'info') {
  const t = $('#toast');
  if (!t) return;
  t.textContent = message;
  t.className = 'show ' + kind;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => (t.className = ''), kind === 'error' ? 8000 : 3000);
}

/** Asks before something irreversible. */
export function confirmDialog(text, ok = 'Delete') {
  const d = $('#confirm');
  $('#confirm-text').textContent = text;
  $('#confirm-ok').textContent = ok;
  d.returnValue = '';
  d.showModal();
  return new Promise((resolve) => d.addEventListener('close', () => resolve(d.returnValue === 'ok'), { once: true }));
}

/** A state badge. */
export function badge(state) {
  return h('span', { class: 'badge ' + String(state || 'unknown').toLowerCase() }, state || 'unknown');
}

/** A Unix time (seconds) as local date and time. */
export function when(t) {
  if (!t) return '';
  const ms = typeof t === 'number' ? (t > 1e12 ? t : t * 1000) : Date.parse(t);
  return new Date(ms).toLocaleString();
}

/** Follows `/api/v1/events`: a snapshot, then changes; reconnects and
 * resumes after the last revision seen. */
export function events(onEvent) {
  let revision = null;
  let delay = 500;
  const connect = () => {
    const url = wsUrl('/events' + (revision ? `?revision=${revision + 1}` : ''));
    const ws = new WebSocket(url);
    ws.onopen = () => { delay = 500; };
    ws.onmessage = (m) => {
      let ev;
      try { ev = JSON.parse(m.data); } catch { return; }
      if (ev.type === 'error') { revision = null; return; }
      if (typeof ev.revision === 'number') revision = Math.max(revision || 0, ev.revision);
      onEvent(ev);
    };
    ws.onclose = () => {
      setTimeout(connect, delay);
      delay = Math.min(delay * 2, 10000);
    };
  };
  connect();
}

/** Calls `fn` once after a burst of calls. */
export function debounce(fn, ms = 150) {
  let t;
  return (...a) => { clearTimeout(t); t = setTimeout(() => fn(...a), ms); };
}

/** Replaces a table body's rows; `empty` when there are none. Each cell
 * without a `data-label` is named after its column's heading (a phone shows
 * each row as a card of named cells), except the actions cell. */
export function fillTable(table, rows, empty) {
  const body = table.tBodies[0];
  const heads = [...table.tHead.rows[0].cells].map((c) => c.textContent.trim());
  for (const tr of rows) {
    [...tr.cells].forEach((td, i) => {
      if (!td.hasAttribute('data-label') && heads[i] && !td.classList.contains('actions') && td.colSpan === 1) {
        td.dataset.label = heads[i];
      }
    });
  }
  body.replaceChildren(...rows);
  if (!rows.length) {
    body.append(h('tr', {}, h('td', { colspan: table.tHead.rows[0].cells.length, class: 'muted' }, empty)));
  }
}

// The logout button of every page.
document.addEventListener('DOMContentLoaded', () => {
  const out = $('#logout');
  if (out) out.addEventListener('click', async () => {
    await fetch('/ui/logout', { method: 'POST', headers: { 'X-CSRF-Token': csrf }, credentials: 'same-origin' });
    location.href = '/login';
  });
});
