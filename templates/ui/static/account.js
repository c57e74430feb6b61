// Account: who you are, linked git accounts, API tokens.
import { $, h, api, seg, onSubmit, confirmDialog, toast, when, fillTable } from './lb.js';

const VENDORS = [['github', 'GitHub'], ['bitbucket', 'Bitbucket'], ['gitlab', 'GitLab']];

async function loadMe() {
  try {
    const me = await api('GET', '/me');
    $('#me').textContent = `${me.username} (${me.role}), since ${when(me.created)}`;
  } catch (e) {
    $('#me').textContent = e.message;
  }
}

async function loadVendors() {
  const ul = $('#vendors');
  const note = $('#vendors-note');
  let linked = {};
  try {
    const list = await api('GET', '/vendors');
    for (const v of list.items || []) linked[v.vendor] = v;
    note.textContent = 'Link an account to build its private repositories and pick them when creating a service.';
  } catch (e) {
    if (e.status === 404) {
      note.textContent = 'Git accounts cannot be linked on this server yet (vendor accounts are not configured).';
      ul.replaceChildren();
      return;
    }
    note.textContent = e.message;
  }
  // Only vendors whose OAuth application this server has can be linked; a
  // link made before the application was removed can still be undone.
  const configured = (document.body.dataset.vendors || '').split(' ').filter(Boolean);
  const shown = VENDORS.filter(([id]) => configured.includes(id) || linked[id]);
  if (!shown.length) {
    note.textContent = 'Git accounts cannot be linked on this server (no GitHub, GitLab or Bitbucket application is configured): build from public git URLs.';
    ul.replaceChildren();
    return;
  }
  ul.replaceChildren(...shown.map(([id, label]) => {
    const v = linked[id];
    return h('li', { class: 'row spread', dataset: { vendor: id } },
      h('span', {}, h('strong', {}, label), ' ', v ? `linked as ${v.login}` : h('span', { class: 'muted' }, 'not linked')),
      v
        ? h('button', { type: 'button', class: 'danger', onclick: () => unlink(id, label) }, `Unlink ${label}`)
        : h('button', { type: 'button', onclick: () => link(id, label) }, `Link ${label}`));
  }));
}

async function link(id, label) {
  // The connect route answers a redirect to the vendor: ask first, so an
  // error (not configured) shows here instead of as a bare JSON page.
  let res;
  try {
    res = await fetch(`/api/v1/vendors/${seg(id)}/connect`, { redirect: 'manual', credentials: 'same-origin' });
  } catch (e) {
    toast(e.message, 'error');
    return;
  }
  if (res.type !== 'opaqueredirect') {
    let msg = `${label} accounts cannot be linked on this server (it answered ${res.status})`;
    if (res.status === 404) msg = `${label} accounts cannot be linked on this server yet (not configured)`;
    try { const e = (await res.json()).error; if (e && e.message && res.status !== 404) msg = e.message; } catch { /* not JSON */ }
    toast(msg, 'error');
    return;
  }
  location.href = `/api/v1/vendors/${seg(id)}/connect`;
}

async function unlink(id, label) {
  if (!(await confirmDialog(`Unlink your ${label} account? Services building from its private repositories will fail to clone.`, 'Unlink'))) return;
  try {
    await api('DELETE', `/vendors/${seg(id)}`);
    toast(`${label} unlinked`);
  } catch (e) {
    toast(e.status === 404 ? 'vendor accounts are not configured on this server yet' : e.message, 'error');
  }
  loadVendors();
}

async function loadTokens() {
  let list;
  try {
    list = await api('GET', '/tokens');
  } catch (e) {
    toast(e.message, 'error');
    return;
  }
  fillTable($('#tokens'), list.items.map((t) => h('tr', {},
    h('td', {}, t.name),
    h('td', {}, when(t.created)),
    h('td', { class: 'actions' }, h('button', { type: 'button', class: 'danger', onclick: () => revoke(t) }, 'Revoke')))),
  'No API tokens.');
}

async function revoke(t) {
  if (!(await confirmDialog(`Revoke the token "${t.name}"? Programs using it will be refused.`, 'Revoke'))) return;
  try {
    await api('DELETE', '/tokens/' + seg(t.id));
    toast('Token revoked');
  } catch (e) {
    toast(e.message, 'error');
  }
  loadTokens();
}

const form = $('#token-form');
onSubmit(form, async (data) => {
  const t = await api('POST', '/tokens', { name: data.get('name').trim() });
  form.reset();
  $('#new-token').hidden = false;
  const out = $('#new-token-value');
  out.value = t.token;
  out.focus();
  out.select();
  loadTokens();
});

loadMe();
loadVendors();
loadTokens();
