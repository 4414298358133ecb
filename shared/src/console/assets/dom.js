// Building the page safely: every value goes in through textContent or a checked attribute,
// never parsed as HTML, so what the API returns (attacker-controlled payloads, headers,
// URLs, receivers' error texts) is always shown as text.

/** An element: `attrs` are set with setAttribute (never `on*` or `style`), children are nodes
 * or strings (turned into text nodes). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (/^on/i.test(k) || k === 'style' || k === 'href' || k === 'src') {
      throw new Error(`h(): attribute ${k} is not set this way`);
    }
    el.setAttribute(k, v === true ? '' : String(v));
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

/** A link inside the console (a `#/...` route). */
export function route(hash, ...children) {
  if (!hash.startsWith('#/')) throw new Error('route(): not a console route');
  const a = h('a', {}, ...children);
  a.setAttribute('href', hash);
  return a;
}

/** The URL as a link when it is http(s), else as text: a `javascript:` or `data:` URL never
 * becomes a link. The link opens in a new tab without opener or referrer. */
export function externalLink(url) {
  let parsed = null;
  try {
    parsed = new URL(url);
  } catch {
    parsed = null;
  }
  if (!parsed || (parsed.protocol !== 'http:' && parsed.protocol !== 'https:')) {
    return h('span', { class: 'url' }, String(url));
  }
  const a = h('a', { class: 'url', target: '_blank', rel: 'noopener noreferrer' }, String(url));
  a.setAttribute('href', parsed.href);
  return a;
}

export function clear(el) {
  el.replaceChildren();
  return el;
}

export function table(headers, rows, attrs = {}) {
  return h(
    'table',
    attrs,
    h('thead', {}, h('tr', {}, headers.map((x) => h('th', {}, x)))),
    h('tbody', {}, rows),
  );
}

export function button(label, onClick, attrs = {}) {
  const b = h('button', { type: 'button', ...attrs }, label);
  b.addEventListener('click', onClick);
  return b;
}

export function statusBadge(status) {
  return h('span', { class: `badge s-${/^[a-z_]+$/.test(status) ? status : 'unknown'}` }, status);
}

/** `2026-11-27T10:43:55.003Z` as `2026-11-27 10:43:55.003` (UTC), or an em dash. */
export function when(iso) {
  if (!iso) return '—';
  return String(iso).replace('T', ' ').replace(/Z$/, '');
}

export function ms(n) {
  if (n === null || n === undefined || Number.isNaN(n)) return '—';
  return Math.abs(n) >= 10000 ? `${(n / 1000).toFixed(1)} s` : `${Math.round(n)} ms`;
}

/** The last attempt's error of a task, or its dead letter's. */
export function lastError(task) {
  if (task.dead_letter && task.dead_letter.last_error) return task.dead_letter.last_error;
  const last = (task.attempts || [])[task.attempts.length - 1];
  if (!last || last.outcome === 'succeeded') return '';
  return last.error || (last.status_code ? `HTTP ${last.status_code}` : '');
}

/** Lateness of the first attempt (its start minus run_at), in ms; null for the others (a
 * retry's due time carries jitter and is not recorded). */
export function lateness(task, attempt) {
  if (attempt.number !== 1) return null;
  return Date.parse(attempt.started_at) - Date.parse(task.run_at);
}
