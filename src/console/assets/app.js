// The console page: polls the worker's /api/ every two seconds and draws
// what it says. Every part is drawn on its own, so a part whose service is
// down shows its error and the rest goes on. Values the browser test reads
// are also in data-* attributes.
'use strict';

const $ = (s, root = document) => root.querySelector(s);
const esc = s => String(s ?? '').replace(/[&<>"']/g, c => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c]));
const num = n => n == null ? '—' : Number(n).toLocaleString('en-US', { maximumFractionDigits: n < 10 ? 2 : 0 });
const ms = q => q ? `${num(q.p50)} / ${num(q.p99)} ms` : '—';
const time = t => new Date(t).toISOString().slice(11, 19);
const charts = {};

async function get(path) {
  const r = await fetch(path, { cache: 'no-store' });
  let body;
  try { body = await r.json(); } catch (e) { body = { error: `${r.status} ${r.statusText}` }; }
  if (!r.ok && !body.error) body.error = `${r.status} ${r.statusText}`;
  return body;
}

// A uPlot chart in `box`, made again when its series change.
function chart(box, key, title, names, data) {
  const sig = names.join('|');
  let c = charts[key];
  if (!c || c.sig !== sig || !box.contains(c.u.root)) {
    if (c) c.u.destroy();
    const colors = ['#2f6fdf', '#2e7d32', '#c62828', '#ef8f00', '#8a5cc9', '#00897b', '#6d4c41'];
    const opts = {
      title, width: Math.max(320, Math.min(560, box.clientWidth || 480)), height: 180,
      scales: { x: { time: true } },
      series: [{}].concat(names.map((n, i) => ({ label: n, stroke: colors[i % colors.length], width: 1.5 }))),
    };
    c = charts[key] = { sig, u: new uPlot(opts, data, box) };
  } else {
    c.u.setData(data);
  }
}

function graphSvg(t) {
  const depth = [];
  t.nodes.forEach(n => { depth[n.id] = n.parents.length ? Math.max(...n.parents.map(p => depth[p] + 1)) : 0; });
  // A lane per branch: a node's first child goes on in its lane, any
  // other child starts a new one below.
  const lane = [], continued = {}, pos = {};
  let lanes = 0;
  t.nodes.forEach(n => {
    const p = n.parents[0];
    lane[n.id] = p != null && !continued[p] ? lane[p] : lanes++;
    if (p != null) continued[p] = true;
    pos[n.id] = { x: 10 + depth[n.id] * 190, y: 10 + lane[n.id] * 64 };
  });
  const W = 170, H = 46;
  const width = 20 + (Math.max(...depth) + 1) * 190, height = 20 + lanes * 64;
  let edges = '', nodes = '';
  t.nodes.forEach(n => {
    n.parents.forEach(p => {
      const a = pos[p], b = pos[n.id];
      const x1 = a.x + W, y1 = a.y + H / 2, x2 = b.x, y2 = b.y + H / 2;
      edges += `<path class="edge" d="M${x1},${y1} C${x1 + 12},${y1} ${x2 - 12},${y2} ${x2},${y2}"/>`;
      if (n.rate != null) edges += `<text class="rate" x="${(x1 + x2) / 2 - 8}" y="${(y1 + y2) / 2 - 3}">${num(n.rate)}/s</text>`;
    });
    const p = pos[n.id], failing = n.errors > 0 ? ' failing' : '';
    const label = n.label.length > 28 ? n.label.slice(0, 27) + '…' : n.label;
    nodes += `<g class="node ${n.kind}${failing}" data-label="${esc(n.label)}" data-records="${n.records ?? ''}" data-errors="${n.errors ?? ''}">`
      + `<title>${esc(n.label)}</title><rect x="${p.x}" y="${p.y}" width="${W}" height="${H}"/>`
      + `<text x="${p.x + 6}" y="${p.y + 15}">${esc(label)}</text>`
      + `<text x="${p.x + 6}" y="${p.y + 29}">${n.records != null ? num(n.records) + ' · ' + num(n.rate) + '/s' : ''}</text>`
      + (n.errors ? `<text class="err" x="${p.x + 6}" y="${p.y + 42}">${num(n.errors)} refused</text>` : '')
      + '</g>';
  });
  return `<svg class="graph" viewBox="0 0 ${width} ${height}" height="${height}"><defs><marker id="arrow" viewBox="0 0 8 8" refX="8" refY="4" markerWidth="7" markerHeight="7" orient="auto"><path d="M0,0 L8,4 L0,8 z" fill="#8a93a5"/></marker></defs>${edges}${nodes}</svg>`;
}

function topologyCard(t) {
  const id = 'topology-' + t.name;
  let card = document.getElementById(id);
  if (!card) {
    card = document.createElement('section');
    card.id = id;
    card.className = 'topology';
    card.dataset.topology = t.name;
    card.innerHTML = `<h2>${esc(t.name)}</h2><div class="meta"></div><div class="graph-box"></div><div class="counters"></div>`
      + '<div class="charts"><div class="rates-chart"></div><div class="reasons-chart"></div></div>';
    $('#topologies').appendChild(card);
  }
  const c = t.counters;
  $('.meta', card).innerHTML = `group <b>${esc(t.group)}</b> · reads <b>${esc(t.source)}</b> · commits in ${esc(t.commit)}`
    + ` · dead letters to <b>${esc(t.dead_letter)}</b>` + (t.late ? ` · late to <b>${esc(t.late)}</b>` : '')
    + (t.changelogs.length ? ` · changelogs ${t.changelogs.map(esc).join(', ')}` : '')
    + (t.stores.length ? ` · stores ${t.stores.map(s => esc(s.name + ' (' + s.kept + ')')).join(', ')}` : '');
  $('.graph-box', card).innerHTML = graphSvg(t);
  $('.counters', card).innerHTML = [
    ['in', c.in, t.rates.in], ['out', c.out, t.rates.out], ['dead letters', c.dead_letters, t.rates.dead_letters],
    ['late', c.late, t.rates.late], ['lag', c.lag], ['commits', c.commits], ['aborts', t.aborts],
  ].map(([k, v, r]) => `<span data-counter="${k}" data-value="${v}">${k} <b>${num(v)}</b>${r != null ? ' (' + num(r) + '/s)' : ''}</span>`).join('')
    + `<span data-counter="e2e" title="from each sampled record's timestamp to the commit that made its outputs visible">end to end (record time → committed) p50/p99, last minute <b>${ms(t.e2e_ms)}</b></span>`
    + `<span data-counter="latency" title="from each sampled record's timestamp to its processing">record time → processed <b>${ms(t.latency_ms)}</b></span>`
    + `<span data-counter="commit">commit p50/p99 <b>${ms(t.commit_ms)}</b></span>`;
  const h = t.history;
  const per = (k) => h.map((s, i) => i ? Math.max(0, (s[k] - h[i - 1][k]) * 1000 / Math.max(1, s.t - h[i - 1].t)) : null);
  const xs = h.map(s => s.t / 1000);
  chart($('.rates-chart', card), t.name + '/rates', 'records/s', ['in', 'out', 'dead letters', 'late'], [xs, per('in'), per('out'), per('dead_letters'), per('late')]);
  const reasons = [...new Set(h.flatMap(s => Object.keys(s.by_reason)))].sort();
  const box = $('.reasons-chart', card);
  box.dataset.reasons = reasons.join(',');
  if (reasons.length) {
    const series = reasons.map(r => h.map((s, i) => i ? (s.by_reason[r] || 0) - (h[i - 1].by_reason[r] || 0) : null));
    chart(box, t.name + '/reasons/' + reasons.join(','), 'dead letters by reason, per 2 s', reasons, [xs, ...series]);
  } else {
    box.textContent = 'no dead letters yet';
  }
}

function overview(o) {
  $('#instance').textContent = 'worker ' + o.instance;
  $('#links').innerHTML = o.links.map(l => `<a href="${esc(l.url)}" target="_blank" rel="noopener">${esc(l.name)}</a>`).join(' · ');
  const r = $('#ready');
  r.className = 'badge ' + (o.ready.ok ? 'ok' : 'bad');
  r.textContent = o.ready.ok ? 'ready' : 'not ready';
  r.dataset.ready = o.ready.ok;
  $('#problems').innerHTML = o.ready.ok ? '' : `<div class="problem">not ready: ${esc(o.ready.reason)}</div>`;
  o.topologies.forEach(topologyCard);
  const stores = [...new Set(o.topologies.flatMap(t => t.stores.map(s => s.name)))];
  const sel = $('#lookup-store');
  if (sel.dataset.stores !== stores.join(',')) {
    sel.dataset.stores = stores.join(',');
    sel.innerHTML = stores.length ? stores.map(s => `<option>${esc(s)}</option>`).join('') : '<option value="">(no stores)</option>';
  }
}

function partitions(p) {
  $('#partitions').innerHTML = (p.groups || []).map(g => {
    if (g.error) return `<h3>${esc(g.topology)}</h3><p class="error">${esc(g.error)}</p>`;
    const v = g.view;
    const members = v.members.length
      ? '<ul>' + v.members.map(m => `<li data-member="${esc(m.client_id)}">${esc(m.client_id)} at ${esc(m.host)}: partitions ${m.partitions.join(', ') || '—'}</li>`).join('') + '</ul>'
      : `<p class="meta">${v.members_error ? 'members: ' + esc(v.members_error) : 'no members'}</p>`;
    const rows = v.partitions.map(r => `<tr data-partition="${r.partition}" data-committed="${r.committed ?? ''}" data-end="${r.end}" data-lag="${r.lag ?? ''}">`
      + `<td class="num">${r.partition}</td><td>${esc(r.owner ?? '—')}</td><td class="num">${num(r.committed)}</td><td class="num">${num(r.end)}</td><td class="num">${num(r.lag)}</td></tr>`).join('');
    return `<h3>${esc(g.topology)}</h3><p class="meta">group ${esc(v.group)} · ${esc(v.state || '?')} · protocol ${esc(v.protocol || '?')} · topic ${esc(v.topic)}</p>${members}`
      + `<table class="partitions" data-topology="${esc(g.topology)}"><tr><th class="num">partition</th><th>owner</th><th class="num">committed</th><th class="num">end</th><th class="num">lag</th></tr>${rows}</table>`;
  }).join('') || '<p class="error">' + esc(p.error || 'no groups') + '</p>';
}

function letters(l) {
  $('#letters').innerHTML = (l.topics || []).map(t => {
    const head = `<h3>${esc(t.topology)}: ${t.kind === 'late' ? 'late records' : 'dead letters'} in ${esc(t.topic)}</h3>`;
    if (t.error) return head + `<p class="error">${esc(t.error)}</p>`;
    if (!t.letters.length) return head + '<p class="meta">none</p>';
    return head + `<ul class="letters" data-topic="${esc(t.topic)}">` + t.letters.map(m => {
      const value = m.error ? `undecodable (${m.error.kind}) base64 ${m.value_base64}` : JSON.stringify(m.value);
      return `<li data-offset="${m.partition}:${m.offset}" data-reason="${esc(m.reason)}">${esc(m.timestamp || '')} <span class="reason">${esc(m.reason)}</span> ${esc(m.message)}`
        + ` <span class="meta">from ${esc(m.source)}</span><br><code>${esc(value.length > 300 ? value.slice(0, 300) + '…' : value)}</code></li>`;
    }).join('') + '</ul>';
  }).join('') || '<p class="meta">no dead-letter topics</p>';
}

function windowsTable(t, box) {
  const keyOf = w => t.keys.map(k => w.keys[k]).join(' / ');
  const keys = [...new Set(t.rows.map(keyOf))].sort();
  let sel = $('select', box);
  if (!sel) {
    box.innerHTML = '<label>key <select></select></label> <label>value <select class="value"></select></label><div class="window-chart"></div><table class="windows"></table>';
    sel = $('select', box);
  }
  if (sel.dataset.keys !== keys.join('|')) {
    const was = sel.value;
    sel.dataset.keys = keys.join('|');
    sel.innerHTML = keys.map(k => `<option>${esc(k)}</option>`).join('');
    if (keys.includes(was)) sel.value = was;
  }
  const vsel = $('select.value', box);
  const names = t.rows.length ? Object.keys(t.rows[0].values) : [];
  if (vsel.dataset.names !== names.join('|')) {
    vsel.dataset.names = names.join('|');
    vsel.innerHTML = names.map(n => `<option>${esc(n)}</option>`).join('');
    if (names.includes('avg')) vsel.value = 'avg';
  }
  const key = sel.value, value = vsel.value;
  const points = t.rows.filter(w => keyOf(w) === key).sort((a, b) => a.start_ms - b.start_ms);
  const cbox = $('.window-chart', box);
  cbox.dataset.key = key;
  cbox.dataset.value = value;
  cbox.dataset.points = points.length;
  cbox.dataset.last = points.length ? points[points.length - 1].values[value] : '';
  if (points.length) chart(cbox, t.table + '/' + key + '/' + value, `${value} of ${key} per window`, [value], [points.map(w => w.start_ms / 1000), points.map(w => w.values[value])]);
  $('table.windows', box).innerHTML = '<tr>' + t.keys.map(k => `<th>${esc(k)}</th>`).join('') + '<th>window (UTC)</th>' + names.map(n => `<th class="num">${esc(n)}</th>`).join('') + '<th>final</th></tr>'
    + t.rows.slice(0, 8).map(w => '<tr>' + t.keys.map(k => `<td>${esc(w.keys[k])}</td>`).join('') + `<td>${time(w.start_ms)}–${time(w.end_ms)}</td>`
      + names.map(n => `<td class="num">${num(w.values[n])}</td>`).join('') + `<td>${w.final ? 'yes' : 'no'}</td></tr>`).join('');
}

function tables(t) {
  const root = $('#tables');
  if (t.error) { root.innerHTML = `<p class="error">${esc(t.error)}</p>`; return; }
  if (!t.tables.length) { root.innerHTML = '<p class="meta">no tables in these topologies</p>'; return; }
  if (root.textContent === 'loading…') root.textContent = '';
  t.tables.forEach(tab => {
    const id = 'table-' + tab.table;
    let box = document.getElementById(id);
    if (!box) {
      box = document.createElement('div');
      box.id = id;
      box.dataset.table = tab.table;
      box.innerHTML = `<h3>${esc(tab.topology)}: ${esc(tab.table)} <span class="meta">(${esc(tab.database)})</span></h3><p class="error"></p><div class="body"></div>`;
      root.appendChild(box);
    }
    $('.error', box).textContent = tab.error || '';
    const body = $('.body', box);
    if (tab.error) return;
    if (tab.kind === 'windows') return windowsTable(tab, body);
    body.innerHTML = `<table class="rows"><tr>${tab.columns.map(c => `<th>${esc(c)}</th>`).join('')}<th>read at</th></tr>`
      + tab.rows.map(r => `<tr data-offset="${r.partition}:${r.offset}">` + tab.columns.map(c => `<td>${esc(r.columns[c])}</td>`).join('') + `<td>${r.partition}:${r.offset}</td></tr>`).join('') + '</table>';
  });
}

async function part(path, draw, where) {
  try {
    draw(await get(path));
  } catch (e) {
    $(where).innerHTML = `<p class="error">${esc(path)}: ${esc(e.message || e)}</p>`;
  }
}

async function refresh() {
  try {
    overview(await get('/api/overview'));
  } catch (e) {
    $('#ready').className = 'badge bad';
    $('#ready').textContent = 'unreachable';
    $('#problems').innerHTML = `<div class="problem">the worker does not answer: ${esc(e.message || e)}</div>`;
    return;
  }
  await Promise.all([
    part('/api/partitions', partitions, '#partitions'),
    part('/api/letters', letters, '#letters'),
    part('/api/tables', tables, '#tables'),
  ]);
  const u = $('#updated');
  u.textContent = 'updated ' + new Date().toLocaleTimeString();
  u.dataset.refreshes = Number(u.dataset.refreshes || 0) + 1;
}

$('#lookup').addEventListener('submit', async e => {
  e.preventDefault();
  const store = $('#lookup-store').value, key = $('#lookup-key').value;
  const out = $('#lookup-result');
  if (!store) { out.textContent = 'this deployment has no stores'; return; }
  if (!key.trim()) { out.className = 'error'; out.textContent = 'give a key to look up'; return; }
  const r = await get(`/api/stores/${encodeURIComponent(store)}/${encodeURIComponent(key)}`);
  out.className = r.error ? 'error' : '';
  out.textContent = r.error || JSON.stringify(r, null, 2);
});

refresh();
setInterval(refresh, 2000);
