// The Scripts panel of a service's page: the project's stored scripts
// (pick one, edit it, save it with If-Match, delete it), running the chosen
// one in this service's first running replica, a named one, or all of them
// (a second process in each container: nothing is restarted), each
// replica's exit code and output, and the script's last runs.
import { $, h, api, seg, toast, confirmDialog, when, fillTable, showError, clearErrors } from './lb.js';

const P = document.body.dataset.project;
const S = document.body.dataset.service;
const scriptsPath = `/projects/${seg(P)}/scripts`;
const servicePath = `/projects/${seg(P)}/services/${seg(S)}`;
const card = $('#scripts-card');
let current = null; // the script being edited, as the API answered it (with its revision)

function field(id, label, input) {
  return h('div', { class: 'field' }, h('label', { for: id }, label), input, h('p', { class: 'error', id: `${id}-error`, role: 'alert' }));
}

function build() {
  card.replaceChildren(
    h('div', { class: 'head' }, h('h2', {}, 'Scripts'),
      h('div', { class: 'actions' },
        h('label', { for: 'script-pick', class: 'sr' }, 'Script'),
        h('select', { id: 'script-pick' }),
        h('button', { type: 'button', id: 'script-new', class: 'secondary' }, 'New script'))),
    h('p', { class: 'muted' }, 'Stored scripts of the project, run inside running replicas as a second process: the containers are not restarted.'),
    h('form', { id: 'script-form', novalidate: '' },
      field('script-name', 'Name', h('input', { id: 'script-name', name: 'name', 'data-field': 'name', autocomplete: 'off', spellcheck: 'false' })),
      field('script-interpreter', 'Interpreter', h('input', { id: 'script-interpreter', name: 'interpreter', 'data-field': 'interpreter', list: 'script-interpreters', value: 'sh', title: 'sh, bash, python3, or a command reading the program from stdin' })),
      h('datalist', { id: 'script-interpreters' }, h('option', { value: 'sh' }), h('option', { value: 'bash' }), h('option', { value: 'python3' })),
      field('script-body', 'Body', h('textarea', { id: 'script-body', name: 'body', 'data-field': 'body', rows: '8', class: 'mono', spellcheck: 'false' })),
      field('script-args', 'Default arguments (one a line)', h('textarea', { id: 'script-args', name: 'args', 'data-field': 'args', rows: '2', class: 'mono' })),
      field('script-env', 'Environment (KEY=VALUE, one a line)', h('textarea', { id: 'script-env', name: 'env', 'data-field': 'env', rows: '2', class: 'mono' })),
      field('script-timeout', 'Timeout (seconds)', h('input', { id: 'script-timeout', name: 'timeout', 'data-field': 'timeout', type: 'number', min: '1', max: '3600', value: '60', class: 'num' })),
      h('p', { class: 'error form-error', id: 'script-form-error', role: 'alert' }),
      h('div', { class: 'actions' },
        h('button', { type: 'submit', id: 'script-save' }, 'Save'),
        h('button', { type: 'button', id: 'script-delete', class: 'danger', hidden: '' }, 'Delete'))),
    h('form', { id: 'script-run-form', class: 'inline', novalidate: '' },
      h('label', { for: 'script-replica', class: 'sr' }, 'Replica'),
      h('select', { id: 'script-replica', 'data-field': 'replica' }),
      h('label', { for: 'script-run-args', class: 'sr' }, 'Arguments'),
      h('input', { id: 'script-run-args', 'data-field': 'args', class: 'mono', placeholder: 'arguments (default: the script\'s), separated by spaces', spellcheck: 'false' }),
      h('button', { type: 'submit', id: 'script-run' }, 'Run'),
      h('p', { class: 'error form-error', id: 'script-run-form-error', role: 'alert' })),
    h('div', { id: 'script-output', 'aria-live': 'polite' }),
    h('h3', {}, 'Last runs'),
    h('div', { class: 'scroll' }, h('table', { id: 'script-runs', class: 'cards' },
      h('thead', {}, h('tr', {}, h('th', {}, 'Started'), h('th', {}, 'By'), h('th', {}, 'Service'), h('th', {}, 'Replicas'), h('th', {}, 'Exit codes'))),
      h('tbody', {}))),
  );
}

const lines = (text) => text.split('\n').map((l) => l.trim()).filter(Boolean);

function readForm() {
  const env = {};
  for (const line of lines($('#script-env').value)) {
    const at = line.indexOf('=');
    if (at < 1) throw Object.assign(new Error(`"${line}" is not KEY=VALUE`), { field: 'env' });
    env[line.slice(0, at)] = line.slice(at + 1);
  }
  const words = $('#script-interpreter').value.trim().split(/\s+/).filter(Boolean);
  return {
    name: $('#script-name').value.trim(),
    interpreter: words.length > 1 ? words : (words[0] || 'sh'),
    body: $('#script-body').value,
    args: lines($('#script-args').value),
    env,
    timeout: Number($('#script-timeout').value || 60),
  };
}

function fill(script) {
  current = script;
  $('#script-name').value = script ? script.name : '';
  $('#script-name').readOnly = !!script;
  const i = script ? script.interpreter : 'sh';
  $('#script-interpreter').value = Array.isArray(i) ? i.join(' ') : i;
  $('#script-body').value = script ? script.body : '';
  $('#script-args').value = script ? (script.args || []).join('\n') : '';
  $('#script-env').value = script ? Object.entries(script.env || {}).map(([k, v]) => `${k}=${v}`).join('\n') : '';
  $('#script-timeout').value = script ? script.timeout : 60;
  $('#script-delete').hidden = !script;
  $('#script-run').disabled = !script;
  $('#script-output').replaceChildren();
  loadRuns();
}

async function loadScripts(select) {
  const list = await api('GET', scriptsPath);
  const pick = $('#script-pick');
  const items = list.items || [];
  pick.replaceChildren(h('option', { value: '' }, items.length ? 'choose a script' : 'no scripts yet'),
    ...items.map((s) => h('option', { value: s.name }, s.name)));
  const chosen = items.find((s) => s.name === select) || null;
  pick.value = chosen ? chosen.name : '';
  fill(chosen);
}

async function loadReplicas() {
  const select = $('#script-replica');
  const keep = select.value;
  let items = [];
  try { items = (await api('GET', `${servicePath}/replicas`)).items || []; } catch { items = []; }
  const running = items.filter((r) => r.state === 'running');
  select.replaceChildren(
    h('option', { value: '' }, 'first running replica'),
    h('option', { value: 'all' }, `all running replicas (${running.length})`),
    ...running.map((r) => h('option', { value: r.id }, `replica ${r.id.slice(-6).toLowerCase()}`)));
  if ([...select.options].some((o) => o.value === keep)) select.value = keep;
}

async function loadRuns() {
  const table = $('#script-runs');
  if (!current) return fillTable(table, [], 'Choose a script.');
  let runs = [];
  try { runs = (await api('GET', `${scriptsPath}/${seg(current.name)}/runs`)).items || []; } catch { runs = []; }
  fillTable(table, runs.map((r) => h('tr', {},
    h('td', {}, when(r.started)), h('td', {}, r.by), h('td', {}, r.service),
    h('td', {}, String((r.replicas || []).length)),
    h('td', { class: 'mono' }, (r.replicas || []).map((x) => x.timed_out ? 'timeout' : (x.exit_code ?? 'error')).join(' ')))), 'No runs yet.');
}

function showRun(run) {
  const out = $('#script-output');
  out.replaceChildren(...(run.replicas || []).map((r) => {
    const code = r.timed_out ? 'timed out' : (r.exit_code === undefined || r.exit_code === null ? 'did not run' : `exit ${r.exit_code}`);
    return h('div', { class: 'script-result' },
      h('h4', {}, `Replica ${r.replica.slice(-6).toLowerCase()}: `, h('span', { class: `badge ${r.exit_code === 0 ? 'running' : 'failed'}` }, code), ` in ${r.duration_ms} ms`),
      r.error ? h('p', { class: 'error' }, r.error) : '',
      h('pre', { class: 'log', tabindex: '0', 'aria-label': 'stdout' }, r.stdout || ''),
      r.stderr ? h('pre', { class: 'log stderr', tabindex: '0', 'aria-label': 'stderr' }, r.stderr) : '',
      r.truncated ? h('p', { class: 'muted' }, 'Output was cut at 64 KiB a stream.') : '');
  }));
}

function wire() {
  $('#script-pick').addEventListener('change', async (ev) => {
    const name = ev.target.value;
    if (!name) return fill(null);
    try { fill(await api('GET', `${scriptsPath}/${seg(name)}`)); } catch (e) { toast(e.message, 'error'); }
  });
  $('#script-new').addEventListener('click', () => { $('#script-pick').value = ''; fill(null); $('#script-name').focus(); });
  const form = $('#script-form');
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    clearErrors(form);
    try {
      const script = readForm();
      if (!script.name) throw Object.assign(new Error('give the script a name'), { field: 'name' });
      // A new script is created (409 when the name is taken); an edited
      // one replaced only at the revision shown.
      const saved = current
        ? await api('PUT', `${scriptsPath}/${seg(script.name)}`, script, { 'If-Match': `"${current.revision}"` })
        : await api('POST', scriptsPath, script);
      toast(`Script "${saved.name}" saved.`);
      await loadScripts(saved.name);
    } catch (e) {
      showError(form, { message: e.message, field: e.field || null });
    }
  });
  $('#script-delete').addEventListener('click', async () => {
    if (!current || !(await confirmDialog(`Delete script "${current.name}" and its runs?`))) return;
    try {
      await api('DELETE', `${scriptsPath}/${seg(current.name)}`, undefined, { 'If-Match': `"${current.revision}"` });
      toast(`Script "${current.name}" deleted.`);
      await loadScripts('');
    } catch (e) { toast(e.message, 'error'); }
  });
  const runForm = $('#script-run-form');
  runForm.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    clearErrors(runForm);
    if (!current) return;
    const replica = $('#script-replica').value || null;
    const words = $('#script-run-args').value.trim().split(/\s+/).filter(Boolean);
    const body = { replica };
    if (words.length) body.args = words;
    const button = $('#script-run');
    button.disabled = true;
    $('#script-output').replaceChildren(h('p', { class: 'muted' }, `Running "${current.name}"…`));
    try {
      showRun(await api('POST', `${servicePath}/scripts/${seg(current.name)}/run`, body));
    } catch (e) {
      $('#script-output').replaceChildren();
      showError(runForm, { message: e.message, field: e.field || null });
    } finally {
      button.disabled = false;
      loadRuns();
    }
  });
  $('#script-replica').addEventListener('focus', loadReplicas);
}

if (card) {
  build();
  wire();
  loadReplicas();
  loadScripts('').catch((e) => card.append(h('p', { class: 'error' }, e.message)));
}
