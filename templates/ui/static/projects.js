// The projects page: list, create, rename, delete.
import { $, h, api, seg, onSubmit, confirmDialog, toast, when, fillTable, events, debounce, showError, clearErrors } from './lb.js';

const table = $('#projects');

// While a row is being renamed, live reloads wait (they would drop the input).
let renaming = false;

async function load() {
  if (renaming) return;
  let list;
  try {
    list = await api('GET', '/projects?limit=1000');
  } catch (e) {
    toast(e.message, 'error');
    return;
  }
  // A rename may have started while the list was on its way.
  if (renaming) return;
  fillTable(table, list.items.map(row), 'No projects yet: create one below.');
}

function row(p) {
  const tr = h('tr', { dataset: { id: p.id } },
    h('td', {}, h('a', { href: '/projects/' + seg(p.name) }, p.name)),
    h('td', {}, p.description || ''),
    h('td', {}, when(p.created)),
    h('td', { class: 'actions' },
      h('button', { type: 'button', class: 'secondary', onclick: () => rename(tr, p) }, 'Rename'),
      h('button', { type: 'button', class: 'danger', onclick: () => remove(p) }, 'Delete')));
  return tr;
}

function rename(tr, p) {
  renaming = true;
  const input = h('input', { value: p.name, 'aria-label': 'New name', 'data-field': 'name', id: 'rename-' + p.id });
  const err = h('p', { class: 'error', id: 'rename-' + p.id + '-error' });
  const form = h('form', { class: 'inline', novalidate: true },
    input,
    h('button', { type: 'submit' }, 'Save'),
    h('button', { type: 'button', class: 'secondary', onclick: () => { renaming = false; load(); } }, 'Cancel'),
    err, h('p', { class: 'error form-error' }));
  tr.cells[0].replaceChildren(form);
  input.focus();
  input.select();
  onSubmit(form, async () => {
    await api('PATCH', '/projects/' + seg(p.id), { name: input.value.trim() }, { 'If-Match': String(p.revision) });
    renaming = false;
    toast('Project renamed');
    await load();
  });
}

async function remove(p) {
  if (!(await confirmDialog(`Delete project "${p.name}" and all its services? This cannot be undone.`))) return;
  try {
    await api('DELETE', '/projects/' + seg(p.id));
    toast(`Project "${p.name}" deleted`);
  } catch (e) {
    toast(e.message, 'error');
  }
  await load();
}

const form = $('#project-form');
onSubmit(form, async (data) => {
  const p = await api('POST', '/projects', { name: data.get('name').trim(), description: data.get('description') });
  form.reset();
  toast(`Project "${p.name}" created`);
  await load();
});
void showError; void clearErrors;

load();
const reload = debounce(load, 200);
events((ev) => { if (ev.type === 'snapshot' || ev.kind === 'project') reload(); });
