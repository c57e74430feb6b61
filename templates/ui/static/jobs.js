// The Jobs panel of a service's page: run a one-off job (a command in a
// new container of the service's image), the service's jobs with their
// state and exit code, one job's output, cancelling one; and the service's
// cron schedules with their next run and last result. Jobs are read again
// every 2 s while one is not over, else every 20 s.
import { $, h, api, seg, toast, when, fillTable, badge, onSubmit } from './lb.js';

const P = document.body.dataset.project;
const S = document.body.dataset.service;
const servicePath = `/projects/${seg(P)}/services/${seg(S)}`;
const card = $('#jobs-card');
let shown = null; // the job whose output is open
let timer = null;

const over = (job) => !['pending', 'running'].includes(job.state);

function took(job) {
  if (!job.started) return '';
  const end = job.finished || Math.floor(Date.now() / 1000);
  return `${Math.max(0, end - job.started)} s`;
}

function build() {
  card.replaceChildren(
    h('div', { class: 'head' }, h('h2', {}, 'Jobs'),
      h('form', { id: 'job-form', class: 'inline', novalidate: '' },
        h('label', { for: 'job-command', class: 'sr' }, 'Command'),
        h('input', { id: 'job-command', name: 'command', 'data-field': 'command', class: 'mono cmd', placeholder: 'command and arguments', autocomplete: 'off', spellcheck: 'false', title: 'words separated by spaces' }),
        h('label', { for: 'job-timeout', class: 'sr' }, 'Time limit (s)'),
        h('input', { id: 'job-timeout', name: 'timeout', 'data-field': 'timeout', type: 'number', min: '1', max: '86400', class: 'num', placeholder: '3600', title: 'seconds before it is killed' }),
        h('button', { type: 'submit', id: 'job-run' }, 'Run job'))),
    h('p', { class: 'error form-error', id: 'job-form-error', role: 'alert' }),
    h('p', { class: 'muted' }, 'A command run to completion in a new container of this service\'s image, env and volumes; its exit code and output are kept.'),
    h('div', { class: 'scroll' },
      h('table', { id: 'jobs', class: 'cards' },
        h('thead', {}, h('tr', {}, ...['Job', 'State', 'Exit code', 'Command', 'Schedule', 'Started', 'Duration', ''].map((t) => h('th', {}, t)))),
        h('tbody', {}))),
    h('div', { id: 'job-detail', hidden: '' },
      h('h3', { id: 'job-title' }),
      h('p', { id: 'job-message', class: 'muted' }),
      h('pre', { id: 'job-logs', class: 'log', tabindex: '0', 'aria-label': 'Job output' })),
    h('h3', {}, 'Schedules'),
    h('div', { class: 'scroll' },
      h('table', { id: 'schedules', class: 'cards' },
        h('thead', {}, h('tr', {}, ...['Name', 'Cron', 'Time zone', 'Concurrency', 'Next run', 'Last result'].map((t) => h('th', {}, t)))),
        h('tbody', {}))),
  );
  onSubmit($('#job-form'), run);
}

// Errors are shown beside the form by `onSubmit`.
async function run() {
  const command = $('#job-command').value.trim().split(/\s+/).filter(Boolean);
  const t = $('#job-timeout').value;
  const job = await api('POST', `${servicePath}/jobs`, { command, timeout: t ? Number(t) : null });
  toast(`Job ${job.id} started`);
  shown = job.id;
  await refresh();
}

async function cancel(job) {
  try {
    await api('DELETE', `${servicePath}/jobs/${seg(job.id)}`);
    toast(`Job ${job.id}: cancelling`);
    await refresh();
  } catch (err) {
    toast(err.message, 'error');
  }
}

async function showJob(id) {
  shown = id;
  const job = await api('GET', `${servicePath}/jobs/${seg(id)}`);
  $('#job-detail').hidden = false;
  $('#job-title').textContent = `Job ${job.id}: ${job.state}${job.exit_code != null ? ` (exit ${job.exit_code})` : ''}`;
  $('#job-message').textContent = job.message || '';
  $('#job-logs').textContent = job.logs || (over(job) ? '(no output)' : '(the output is kept when the job is over)');
}

function jobRow(job) {
  const open = h('button', { type: 'button', class: 'link' }, job.id.slice(-8).toLowerCase());
  open.addEventListener('click', () => showJob(job.id).catch((e) => toast(e.message, 'error')));
  const actions = h('td', { class: 'actions' });
  if (!over(job)) {
    const stop = h('button', { type: 'button', class: 'secondary' }, 'Cancel');
    stop.addEventListener('click', () => cancel(job));
    actions.append(stop);
  }
  return h('tr', {},
    h('td', { class: 'mono' }, open),
    h('td', {}, badge(job.state)),
    h('td', {}, job.exit_code != null ? String(job.exit_code) : ''),
    h('td', { class: 'mono' }, job.command.join(' ')),
    h('td', {}, job.schedule || ''),
    h('td', {}, when(job.started)),
    h('td', {}, took(job)),
    actions);
}

function scheduleRow(s) {
  let last = '';
  if (s.skipped) last = `skipped: ${s.skipped}`;
  else if (s.last_job) last = s.last_job.state + (s.last_job.exit_code != null ? ` (${s.last_job.exit_code})` : '');
  return h('tr', {},
    h('td', {}, s.name),
    h('td', { class: 'mono' }, s.cron),
    h('td', {}, s.timezone),
    h('td', {}, s.concurrency),
    h('td', {}, when(s.next_run)),
    h('td', {}, last));
}

async function refresh() {
  clearTimeout(timer);
  let busy = false;
  try {
    const [jobs, schedules] = await Promise.all([
      api('GET', `${servicePath}/jobs`),
      api('GET', `${servicePath}/schedules`),
    ]);
    busy = jobs.items.some((j) => !over(j));
    fillTable($('#jobs'), jobs.items.map(jobRow), 'No jobs.');
    fillTable($('#schedules'), schedules.items.map(scheduleRow), 'No schedules (add them under "schedules" in the spec).');
    if (shown) await showJob(shown);
  } catch (err) {
    if (err.status === 404) return; // the service is gone
  }
  timer = setTimeout(refresh, busy ? 2000 : 20000);
}

if (card) {
  build();
  refresh();
}
