// A project's page: its services (live state), a new service, rename, delete.
import { $, h, api, seg, onSubmit, confirmDialog, toast, badge, fillTable, events, debounce } from './lb.js';
import { buildSpecForm, readSpec } from './specform.js';

let project = document.body.dataset.project;
let info = null;

async function loadProject() {
  try {
    info = await api('GET', '/projects/' + seg(project));
  } catch (e) {
    $('#project-name').textContent = e.status === 404 ? `Project "${project}" not found` : e.message;
    return;
  }
  $('#project-name').textContent = info.name;
  $('#crumb-project').textContent = info.name;
  $('#project-description').textContent = info.description || '';
  document.title = info.name + ' · lb';
}

async function loadServices() {
  let list;
  try {
    list = await api('GET', `/projects/${seg(project)}/services?limit=1000`);
  } catch (e) {
    if (e.status !== 404) toast(e.message, 'error');
    return;
  }
  fillTable($('#services'), list.items.map((s) => {
    const st = s.status || {};
    const r = st.replicas || {};
    // The state the API computed (the same words as lbc), with why.
    const state = h('span', { class: `badge ${st.state || 'unknown'}`, title: st.detail || '' }, st.label || st.state || 'unknown');
    return h('tr', { dataset: { id: s.id } },
      h('td', {}, h('a', { href: `/projects/${seg(info ? info.name : project)}/services/${seg(s.name)}` }, s.name)),
      h('td', {}, state),
      h('td', {}, `${r.ready ?? r.running ?? 0}/${r.desired ?? s.spec.replicas}`),
      h('td', { class: 'mono' }, s.spec.source ? s.spec.source.url : s.spec.image || ''));
  }), 'No services yet: create one below.');
}

$('#rename').addEventListener('click', () => {
  const f = $('#rename-form');
  f.hidden = false;
  f.elements.name.value = info ? info.name : project;
  f.elements.description.value = info ? info.description : '';
  f.elements.name.focus();
});
$('#rename-cancel').addEventListener('click', () => { $('#rename-form').hidden = true; });
onSubmit($('#rename-form'), async (data) => {
  const updated = await api('PATCH', '/projects/' + seg(info.id),
    { name: data.get('name').trim(), description: data.get('description') }, { 'If-Match': String(info.revision) });
  $('#rename-form').hidden = true;
  toast('Project saved');
  if (updated.name !== project) {
    history.replaceState(null, '', '/projects/' + seg(updated.name));
    project = updated.name;
  }
  await loadProject();
});

$('#delete-project').addEventListener('click', async () => {
  const name = info ? info.name : project;
  if (!(await confirmDialog(`Delete project "${name}" and all its services? This cannot be undone.`))) return;
  try {
    await api('DELETE', '/projects/' + seg(info ? info.id : project));
    location.href = '/projects';
  } catch (e) {
    toast(e.message, 'error');
  }
});

const form = $('#service-form');
buildSpecForm(form, { create: true });
onSubmit(form, async () => {
  const spec = readSpec(form);
  const s = await api('POST', `/projects/${seg(project)}/services`, spec);
  if (s.spec.source && !s.spec.image) {
    try { await api('POST', `/projects/${seg(project)}/services/${seg(s.id)}/builds`, { commit: null }); } catch (e) { toast(e.message, 'error'); }
  }
  location.href = `/projects/${seg(info ? info.name : project)}/services/${seg(s.name)}`;
});

await loadProject();
await loadServices();
const reload = debounce(loadServices, 200);
events((ev) => {
  if (ev.type === 'snapshot') return reload();
  if (info && ev.project === info.id) reload();
});
