// Counts by status, deliveries and failures per minute, lateness percentiles over the last
// hour: computed here from pages of GET /tasks (the API has no statistics route), at most
// MAX_PAGES pages of 100 per status, and labelled as sampled when a status has more.

import { scan } from './api.js';
import { h, ms } from './dom.js';
import { STATUSES } from './views.js';

const MAX_PAGES = 10;
const HOUR_MS = 3600 * 1000;
const SVG = 'http://www.w3.org/2000/svg';

function svg(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  for (const c of children) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return el;
}

/** The q-quantile (0..1) of sorted numbers, nearest rank. */
export function quantile(sorted, q) {
  if (!sorted.length) return null;
  const rank = Math.ceil(q * sorted.length);
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1];
}

/** Per-minute bars of the last 60 minutes: deliveries above, failures in red. */
function chart(ok, bad) {
  const w = 600;
  const hgt = 120;
  const bw = w / 60;
  const max = Math.max(1, ...ok.map((n, i) => n + bad[i]));
  const bars = [];
  for (let i = 0; i < 60; i++) {
    const hOk = (ok[i] / max) * (hgt - 14);
    const hBad = (bad[i] / max) * (hgt - 14);
    const label = `${60 - i} min ago: ${ok[i]} delivered, ${bad[i]} failed`;
    if (ok[i]) bars.push(svg('rect', { class: 'bar-ok', x: i * bw + 1, y: hgt - hOk - hBad, width: bw - 2, height: hOk }, svg('title', {}, label)));
    if (bad[i]) bars.push(svg('rect', { class: 'bar-bad', x: i * bw + 1, y: hgt - hBad, width: bw - 2, height: hBad }, svg('title', {}, label)));
  }
  return svg('svg', { viewBox: `0 0 ${w} ${hgt}`, class: 'chart', role: 'img', 'aria-label': 'deliveries and failures per minute, last hour' },
    svg('text', { x: 2, y: 10, class: 'axis' }, `max ${max}/min`),
    svg('line', { x1: 0, y1: hgt - 0.5, x2: w, y2: hgt - 0.5, class: 'axis-line' }),
    ...bars);
}

export async function overviewView(main) {
  const body = h('div', { id: 'overview' });
  const stamp = h('p', { class: 'muted', id: 'overview-updated' });
  main.replaceChildren(h('h1', {}, 'Overview'), stamp, body);

  async function refresh() {
    const now = Date.now();
    const since = now - HOUR_MS;
    const counts = {};
    const sampled = [];
    const perMinOk = new Array(60).fill(0);
    const perMinBad = new Array(60).fill(0);
    const late = [];
    let read = 0;
    for (const status of STATUSES) {
      const r = await scan({ params: { status }, maxPages: MAX_PAGES });
      counts[status] = r.tasks.length;
      read += r.read;
      if (r.next) sampled.push(status);
      for (const t of r.tasks) {
        for (const a of t.attempts || []) {
          const end = Date.parse(a.finished_at);
          if (!(end > since && end <= now)) continue;
          const slot = Math.min(59, Math.floor((end - since) / 60000));
          if (a.outcome === 'succeeded') perMinOk[slot] += 1;
          else perMinBad[slot] += 1;
          if (a.number === 1) late.push(Date.parse(a.started_at) - Date.parse(t.run_at));
        }
      }
    }
    late.sort((a, b) => a - b);
    const delivered = perMinOk.reduce((a, b) => a + b, 0);
    const failed = perMinBad.reduce((a, b) => a + b, 0);
    body.replaceChildren(
      h('div', { class: 'tiles', id: 'status-counts' },
        STATUSES.map((s) => h('a', { class: `tile s-${s}`, 'data-status': s },
          h('span', { class: 'tile-n' }, `${sampled.includes(s) ? '≥ ' : ''}${counts[s]}`),
          h('span', { class: 'tile-label' }, s)))),
      h('h2', {}, 'Last hour'),
      h('p', {}, `${delivered} delivered, ${failed} failed attempts (per minute, oldest left).`),
      chart(perMinOk, perMinBad),
      h('h2', {}, 'Lateness of first attempts, last hour'),
      h('table', { id: 'lateness' },
        h('thead', {}, h('tr', {}, ['attempts', 'p50', 'p90', 'p99', 'max'].map((x) => h('th', {}, x)))),
        h('tbody', {}, h('tr', {},
          h('td', { class: 'num' }, String(late.length)),
          [0.5, 0.9, 0.99, 1].map((q) => h('td', { class: 'num' }, ms(quantile(late, q))))))),
      h('p', { class: 'muted', id: 'sample-note' }, sampled.length
        ? `Sampled: computed from ${read} tasks read; ${sampled.join(', ')} have more than ${MAX_PAGES * 100} (the oldest by run_at were read).`
        : `Computed from all ${read} tasks.`),
    );
    // Links are set here, after the tiles exist: each opens the tasks of its status.
    for (const a of body.querySelectorAll('a.tile')) a.setAttribute('href', `#/tasks?status=${a.dataset.status}`);
    stamp.textContent = `Updated ${new Date(now).toISOString().replace('T', ' ').slice(0, 19)} UTC; refreshes every 10 s.`;
  }
  await refresh();
  return { refresh, every: 10000 };
}
