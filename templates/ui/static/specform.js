// The service spec form, shared by "new service" and a service's settings:
// image or git source (a linked account's repository, or a URL) built from
// its Dockerfile or a template; replicas, memory, cpu, ports, env, volumes,
// node selector, command.
import { $, $$, h, api, seg, fieldError } from './lb.js';

const field = (id, label, input, hint) =>
  h('div', {}, h('label', { for: id }, label), input, hint ? h('small', { class: 'muted' }, hint) : null,
    h('p', { class: 'error', id: id + '-error' }));

const input = (id, name, attrs = {}) => h('input', { id, name, 'data-field': name, ...attrs });
const area = (id, name, attrs = {}) => h('textarea', { id, name, 'data-field': name, rows: 3, ...attrs });

/** Builds the form's fields into `form`. */
export function buildSpecForm(form, { create }) {
  const p = create ? 'n' : 'e';
  const radio = (name, value, label, checked) =>
    h('label', { class: 'choice' }, h('input', { type: 'radio', name, value, checked }), ' ' + label);
  form.replaceChildren(...[
    create ? h('div', { class: 'grid' },
      field(p + '-name', 'Name', input(p + '-name', 'name', { placeholder: 'web', required: true })),
      field(p + '-description', 'Description', input(p + '-description', 'description'))) : null,
    h('fieldset', {}, h('legend', {}, 'Runs'),
      h('div', { class: 'row' }, radio('kind', 'image', 'an image', true), radio('kind', 'git', 'code from git', false)),
      h('div', { class: 'when-image' },
        field(p + '-image', 'Image', input(p + '-image', 'image', { placeholder: 'nginx:1.25', class: 'mono' }))),
      h('div', { class: 'when-git', hidden: true },
        h('div', { class: 'grid' },
          field(p + '-vendor', 'Linked account', h('select', { id: p + '-vendor', name: 'vendor', 'data-field': 'source.vendor' },
            h('option', { value: '' }, 'none: a public URL'))),
          field(p + '-repo', 'Repository', h('select', { id: p + '-repo', name: 'repo', disabled: true },
            h('option', { value: '' }, '—')))),
        h('div', { class: 'grid' },
          field(p + '-url', 'Git URL', input(p + '-url', 'source.url', { placeholder: 'https://github.com/you/app.git', class: 'mono' })),
          field(p + '-branch', 'Branch', input(p + '-branch', 'source.branch', { placeholder: 'main', list: p + '-branches' }))),
        h('datalist', { id: p + '-branches' }),
        h('div', { class: 'row' }, radio('build', 'dockerfile', 'its Dockerfile', true), radio('build', 'template', 'a template', false)),
        h('div', { class: 'grid when-dockerfile' },
          field(p + '-dockerfile', 'Dockerfile', input(p + '-dockerfile', 'source.build.dockerfile', { placeholder: 'Dockerfile' })),
          field(p + '-context', 'Context', input(p + '-context', 'source.build.context', { placeholder: '.' }))),
        h('div', { class: 'grid when-template', hidden: true },
          field(p + '-language', 'Language', h('select', { id: p + '-language', name: 'source.build.language', 'data-field': 'source.build.language' },
            ...['static', 'python', 'node', 'go'].map((l) => h('option', { value: l }, l)))),
          field(p + '-framework', 'Framework', input(p + '-framework', 'source.build.framework', { placeholder: 'flask, fastapi, django, express, nest, next, gin' })),
          field(p + '-version', 'Version', input(p + '-version', 'source.build.version', { placeholder: 'default' })),
          field(p + '-build_cmd', 'Build command', input(p + '-build_cmd', 'source.build.build_cmd')),
          field(p + '-run_cmd', 'Run command', input(p + '-run_cmd', 'source.build.run_cmd'))))),
    h('fieldset', {}, h('legend', {}, 'Resources'),
      h('div', { class: 'grid three' },
        field(p + '-replicas', 'Replicas', input(p + '-replicas', 'replicas', { type: 'number', min: 0, value: 1 })),
        field(p + '-memory', 'Memory (MiB)', input(p + '-memory', 'memory', { type: 'number', min: 4, value: 128 })),
        field(p + '-cpu', 'CPU', input(p + '-cpu', 'cpu', { type: 'number', min: 0, step: 0.1, value: 0.1 })))),
    h('fieldset', {}, h('legend', {}, 'Container'),
      h('div', { class: 'grid' },
        field(p + '-ports', 'Ports', area(p + '-ports', 'ports', { placeholder: '8080\n30080:80\n53/udp', class: 'mono' }),
          'as docker run -p: CONTAINER, or HOST:CONTAINER, with /udp for UDP; one a line'),
        field(p + '-env', 'Environment', area(p + '-env', 'env', { placeholder: 'KEY=value', class: 'mono' }), 'KEY=value, one a line'),
        field(p + '-volumes', 'Volumes', area(p + '-volumes', 'volumes', { placeholder: 'data:/data', class: 'mono' }), 'name:/path, one a line'),
        field(p + '-node_selector', 'Node selector', area(p + '-node_selector', 'node_selector', { placeholder: 'zone=a', class: 'mono' }), 'label=value, one a line')),
      field(p + '-command', 'Command', input(p + '-command', 'command', { class: 'mono', placeholder: 'the image\'s default' }),
        'a shell line, run with /bin/sh -c (quotes, pipes and $VARS work); or a JSON array of words, run as is (for images without a shell)')),
    h('p', { class: 'error form-error', role: 'alert' }),
    h('button', { type: 'submit' }, create ? 'Create service' : 'Save settings')].filter(Boolean));

  const sync = () => {
    const git = $('input[name="kind"]:checked', form).value === 'git';
    $('.when-image', form).hidden = git;
    $('.when-git', form).hidden = !git;
    const tpl = $('input[name="build"]:checked', form).value === 'template';
    $('.when-dockerfile', form).hidden = tpl;
    $('.when-template', form).hidden = !tpl;
  };
  for (const r of $$('input[type="radio"]', form)) r.addEventListener('change', sync);
  sync();
  wireVendors(form, p);
}

/** Fills the repository picker from linked vendor accounts (if any). */
async function wireVendors(form, p) {
  const vendorSel = $('#' + p + '-vendor', form);
  const repoSel = $('#' + p + '-repo', form);
  let vendors = [];
  try {
    const list = await api('GET', '/vendors');
    vendors = list.items || [];
  } catch { /* vendor accounts not available: URLs only */ }
  for (const v of vendors) vendorSel.append(h('option', { value: v.vendor }, v.vendor + (v.login ? ` (${v.login})` : '')));
  let repos = [];
  vendorSel.addEventListener('change', async () => {
    repoSel.replaceChildren(h('option', { value: '' }, '—'));
    repoSel.disabled = true;
    if (!vendorSel.value) return;
    try {
      const list = await api('GET', `/vendors/${seg(vendorSel.value)}/repos`);
      repos = list.items || [];
      for (const [i, r] of repos.entries()) repoSel.append(h('option', { value: i }, r.full_name + (r.private ? ' (private)' : '')));
      repoSel.disabled = false;
    } catch (e) {
      $('#' + p + '-vendor-error', form).textContent = e.message;
    }
  });
  repoSel.addEventListener('change', async () => {
    const r = repos[Number(repoSel.value)];
    if (!r) return;
    $('#' + p + '-url', form).value = r.clone_url || '';
    const branch = $('#' + p + '-branch', form);
    if (r.default_branch) branch.value = r.default_branch;
    const dl = $('#' + p + '-branches', form);
    dl.replaceChildren();
    try {
      const list = await api('GET', `/vendors/${seg(vendorSel.value)}/branches?repo=${encodeURIComponent(r.full_name)}`);
      dl.replaceChildren(...(list.items || []).map((b) => h('option', { value: b.name })));
    } catch (e) {
      $('#' + p + '-branch-error', form).textContent = e.message;
    }
  });
}

const lines = (s) => s.split('\n').map((l) => l.trim()).filter(Boolean);

/** A shell line is run as these words and the line. */
const SHELL = ['/bin/sh', '-c'];

/** A port as `docker run -p` writes it: HOST:CONTAINER[/udp]. */
export const portText = (p) => `${p.host ? p.host + ':' : ''}${p.container}${p.protocol === 'udp' ? '/udp' : ''}`;

/** A command as it was given: the shell line, or the JSON array of words. */
export function commandText(command) {
  if (!command || !command.length) return '';
  if (command.length === 3 && command[0] === SHELL[0] && command[1] === SHELL[1]) return command[2];
  return JSON.stringify(command);
}

function pairs(text, sep, name) {
  const out = {};
  for (const l of lines(text)) {
    const i = l.indexOf(sep);
    if (i <= 0) throw fieldError(name, `"${l}" is not key${sep}value`);
    out[l.slice(0, i).trim()] = l.slice(i + 1).trim();
  }
  return out;
}

/** The spec the form describes (throws a field error for bad input). */
export function readSpec(form) {
  const v = (name) => (form.elements[name]?.value ?? '').trim();
  const num = (name, parse) => {
    const s = v(name);
    const n = parse(s);
    if (s === '' || Number.isNaN(n)) throw fieldError(name, 'must be a number');
    return n;
  };
  const spec = {};
  if (form.elements.name) spec.name = v('name');
  if (form.elements.description) spec.description = form.elements.description.value;
  if ($('input[name="kind"]:checked', form).value === 'image') {
    spec.image = v('image');
    spec.source = null;
  } else {
    const template = $('input[name="build"]:checked', form).value === 'template';
    const opt = (name) => v(name) || null;
    spec.source = {
      url: v('source.url'),
      branch: opt('source.branch'),
      vendor: v('vendor') || null,
      build: template
        ? { kind: 'template', language: v('source.build.language'), framework: opt('source.build.framework'),
            version: opt('source.build.version'), build_cmd: opt('source.build.build_cmd'), run_cmd: opt('source.build.run_cmd') }
        : { kind: 'dockerfile', dockerfile: opt('source.build.dockerfile'), context: opt('source.build.context') },
    };
  }
  spec.replicas = num('replicas', (s) => parseInt(s, 10));
  spec.memory = num('memory', (s) => parseInt(s, 10));
  spec.cpu = num('cpu', parseFloat);
  spec.ports = lines(v('ports')).map((l) => {
    const m = /^(?:(\d+):)?(\d+)(?:\/(tcp|udp))?$/.exec(l);
    if (!m) throw fieldError('ports', `"${l}" is not CONTAINER, HOST:CONTAINER or either with /udp (as docker run -p)`);
    return { container: Number(m[2]), host: m[1] ? Number(m[1]) : null, protocol: m[3] || 'tcp' };
  });
  spec.env = pairs(v('env'), '=', 'env');
  spec.volumes = Object.entries(pairs(v('volumes'), ':', 'volumes')).map(([name, path]) => ({ name, path }));
  spec.node_selector = pairs(v('node_selector'), '=', 'node_selector');
  const cmd = v('command');
  if (!cmd) spec.command = null;
  else if (cmd.startsWith('[')) {
    let words;
    try { words = JSON.parse(cmd); } catch { words = null; }
    if (!Array.isArray(words) || !words.length || words.some((w) => typeof w !== 'string')) {
      throw fieldError('command', 'not a JSON array of strings, e.g. ["/app", "--port", "8080"]');
    }
    spec.command = words;
  } else spec.command = [...SHELL, cmd];
  return spec;
}

/** Puts a spec into the form. */
export function fillSpec(form, spec) {
  const set = (name, value) => { if (form.elements[name]) form.elements[name].value = value ?? ''; };
  const git = !!spec.source;
  $(`input[name="kind"][value="${git ? 'git' : 'image'}"]`, form).checked = true;
  set('image', spec.image || '');
  if (git) {
    set('source.url', spec.source.url);
    set('source.branch', spec.source.branch);
    const b = spec.source.build || {};
    $(`input[name="build"][value="${b.kind === 'template' ? 'template' : 'dockerfile'}"]`, form).checked = true;
    for (const k of ['dockerfile', 'context', 'language', 'framework', 'version', 'build_cmd', 'run_cmd']) set('source.build.' + k, b[k]);
  }
  set('replicas', spec.replicas);
  set('memory', spec.memory);
  set('cpu', spec.cpu);
  set('ports', (spec.ports || []).map(portText).join('\n'));
  set('env', Object.entries(spec.env || {}).map(([k, x]) => `${k}=${x}`).join('\n'));
  set('volumes', (spec.volumes || []).map((x) => `${x.name}:${x.path}`).join('\n'));
  set('node_selector', Object.entries(spec.node_selector || {}).map(([k, x]) => `${k}=${x}`).join('\n'));
  set('command', commandText(spec.command));
  for (const r of $$('input[type="radio"]', form)) r.dispatchEvent(new Event('change'));
}
