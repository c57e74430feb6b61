// Nodes: capacity and use, and a chart of memory and load over the last
// minutes (sampled every 5 seconds while the page is open).
import { $, h, api, toast, fillTable, badge } from './lb.js';

const SAMPLES = 60; // five minutes
const history = new Map(); // node name -> [{t, mem, load}]
const palette = ['#2563eb', '#dc2626', '#16a34a', '#9333ea', '#ea580c', '#0891b2', '#ca8a04'];
let memChart = null;
let loadChart = null;

const mib = (n) => (n >= 1024 ? (n / 1024).toFixed(1) + ' GiB' : Math.round(n) + ' MiB');
const pct = (used, total) => (total ? Math.round((100 * used) / total) : 0);

function meter(used, total) {
  const p = pct(used, total);
  return h('div', { class: 'meter', title: `${p}%` },
    h('span', { class: 'meter-text' }, `${mib(used)} / ${mib(total)} (${p}%)`),
    h('progress', { max: 100, value: p, 'aria-label': `${p} percent` }));
}

async function sample() {
  let list;
  try {
    list = await api('GET', '/nodes');
  } catch (e) {
    toast(e.message, 'error');
    return;
  }
  const now = new Date();
  fillTable($('#nodes'), list.items.map((n) => {
    const cap = n.capacity || {};
    const st = n.status || {};
    const memUsed = cap.memory - (st.free_memory ?? cap.memory);
    const diskUsed = cap.disk - (st.free_disk ?? cap.disk);
    const la = st.load_average || [];
    const hist = history.get(n.name) || [];
    hist.push({ t: now, mem: pct(memUsed, cap.memory), load: la[0] ?? 0 });
    while (hist.length > SAMPLES) hist.shift();
    history.set(n.name, hist);
    return h('tr', {},
      h('td', {}, n.name),
      h('td', {}, badge(n.alive ? 'alive' : 'lost')),
      h('td', {}, String(cap.cpus ?? '')),
      h('td', {}, meter(memUsed, cap.memory || 0)),
      h('td', {}, meter(diskUsed, cap.disk || 0)),
      h('td', { class: 'mono' }, la.map((x) => x.toFixed(2)).join('  ')),
      h('td', {}, String(st.containers ?? '')),
      h('td', { class: 'mono' }, Object.entries(n.labels || {}).map(([k, v]) => `${k}=${v}`).join(' ')));
  }), 'No nodes have joined.');
  draw();
}

function datasets(key) {
  return [...history.entries()].map(([name, hist], i) => ({
    label: name,
    data: hist.map((s) => ({ x: s.t.toLocaleTimeString(), y: s[key] })),
    borderColor: palette[i % palette.length],
    backgroundColor: palette[i % palette.length],
    tension: 0.2,
    pointRadius: 0,
  }));
}

function chart(canvas, title, max) {
  return new window.Chart(canvas, {
    type: 'line',
    data: { datasets: [] },
    options: {
      animation: false,
      responsive: true,
      maintainAspectRatio: false,
      parsing: { xAxisKey: 'x', yAxisKey: 'y' },
      scales: { y: { beginAtZero: true, max, title: { display: true, text: title } } },
      plugins: { legend: { position: 'bottom' } },
    },
  });
}

function draw() {
  if (!window.Chart) {
    $('#chart-note').textContent = 'Charts need Chart.js (Debian libjs-chart.js) on the server.';
    return;
  }
  memChart ||= chart($('#mem-chart'), 'memory used, %', 100);
  loadChart ||= chart($('#load-chart'), 'load average, 1 min', undefined);
  memChart.data.datasets = datasets('mem');
  loadChart.data.datasets = datasets('load');
  memChart.update();
  loadChart.update();
}

sample();
setInterval(sample, 5000);
