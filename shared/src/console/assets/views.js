// The tasks list, one task, and the dead letters.

import { api, apiFeatures, scan } from './api.js';
import { h, route, externalLink, table, button, statusBadge, when, ms, lastError, lateness } from './dom.js';

export const STATUSES = ['scheduled', 'running', 'completed', 'failed', 'cancelled'];
const FINAL = new Set(['completed', 'failed', 'cancelled']);
const ULID = /^[0-7][0-9A-HJKMNP-TV-Z]{25}$/i;

async function features() {
  try {
    return await apiFeatures();
  } catch {
    return {};
  }
}

function hashWith(base, params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v) q.set(k, v);
  const s = q.toString();
  return s ? `${base}?${s}` : base;
}

function taskRow(t) {
  return h(
    'tr',
    { 'data-task-id': t.task_id, 'data-status': t.status },
    h('td', {}, route(`#/task/${encodeURIComponent(t.task_id)}`, h('code', {}, t.task_id))),
    h('td', {}, statusBadge(t.status)),
    h('td', {}, t.payload.method),
    h('td', { class: 'url-cell' }, h('span', { class: 'url' }, t.payload.url)),
    h('td', {}, when(t.run_at)),
    h('td', { class: 'num' }, String((t.attempts || []).length)),
    h('td', { class: 'error-cell' }, lastError(t)),
  );
}

const TASK_HEADERS = ['task', 'status', 'method', 'url', 'run_at (UTC)', 'attempts', 'last error'];

/** `#/tasks?status=&schedule_id=&id=&url=&cursor=` */
export async function tasksView(main, query) {
  const feats = await features();
  const f = {
    status: query.get('status') || '',
    schedule_id: feats.scheduleFilter ? query.get('schedule_id') || '' : '',
    id: (query.get('id') || '').trim(),
    url: query.get('url') || '',
    cursor: query.get('cursor') || '',
  };
  if (ULID.test(f.id)) {
    location.hash = `#/task/${encodeURIComponent(f.id.toUpperCase())}`;
    return {};
  }
  const status = h('select', { name: 'status', id: 'filter-status' }, h('option', { value: '' }, 'any status'),
    STATUSES.map((s) => h('option', { value: s, selected: s === f.status }, s)));
  const schedule = feats.scheduleFilter
    ? h('label', {}, 'schedule ', h('input', { name: 'schedule_id', id: 'filter-schedule', value: f.schedule_id, size: 28 }))
    : null;
  const id = h('input', { name: 'id', id: 'filter-id', value: f.id, placeholder: 'task id (or part of it)', size: 30 });
  const url = h('input', { name: 'url', id: 'filter-url', value: f.url, placeholder: 'URL contains…', size: 30 });
  const form = h('form', { class: 'filters', id: 'task-filters' },
    h('label', {}, 'status ', status), schedule, h('label', {}, 'id ', id), h('label', {}, 'url ', url),
    h('button', { type: 'submit' }, 'Apply'));
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    location.hash = hashWith('#/tasks', {
      status: status.value,
      schedule_id: schedule ? schedule.querySelector('input').value.trim() : '',
      id: id.value.trim(),
      url: url.value,
    });
  });
  const results = h('div', { id: 'task-results' });
  main.replaceChildren(h('h1', {}, 'Tasks'), form, results);

  const base = { status: f.status, schedule_id: f.schedule_id, id: f.id, url: f.url };
  async function refresh() {
    const params = { status: f.status || undefined, schedule_id: f.schedule_id || undefined };
    let tasks;
    let next;
    let note = null;
    if (f.id || f.url) {
      const needleId = f.id.toUpperCase();
      const r = await scan({
        params,
        cursor: f.cursor || null,
        keep: (t) => (!f.id || t.task_id.includes(needleId)) && (!f.url || t.payload.url.includes(f.url)),
        enough: (kept) => kept.length >= 50,
      });
      tasks = r.tasks;
      next = r.next;
      note = `${tasks.length} matching of ${r.read} tasks read${next ? ' (more to read)' : ''}. The API filters by status only: the id and URL are matched here.`;
    } else {
      const page = await api.list({ ...params, limit: 50, cursor: f.cursor || undefined });
      tasks = page.tasks;
      next = page.next_cursor;
    }
    const nav = h('p', { class: 'pager' },
      f.cursor ? route(hashWith('#/tasks', base), '« first page') : null, ' ',
      next ? route(hashWith('#/tasks', { ...base, cursor: next }), 'next page »') : null);
    results.replaceChildren(
      note ? h('p', { class: 'muted', id: 'scan-note' }, note) : '',
      tasks.length ? table(TASK_HEADERS, tasks.map(taskRow), { id: 'tasks-table' }) : h('p', { class: 'muted' }, 'No tasks.'),
      nav,
    );
  }
  await refresh();
  return { refresh, every: 3000 };
}

function dl(pairs) {
  return h('dl', { class: 'facts' }, pairs.flatMap(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]));
}

/** This browser's IANA time zone, or UTC. */
function browserZone() {
  try {
    return Intl.DateTimeFormat().resolvedOptions().timeZone || 'UTC';
  } catch {
    return 'UTC';
  }
}

let zoneNames = null;
/** The IANA zone names this browser knows, for the zone field's suggestions. */
function zones() {
  if (!zoneNames) {
    try {
      zoneNames = Intl.supportedValuesOf('timeZone');
    } catch {
      zoneNames = [];
    }
    if (!zoneNames.includes('UTC')) zoneNames = ['UTC', ...zoneNames];
  }
  return zoneNames;
}

/** The `PATCH /tasks/{id}` body for a time a person typed: with an offset (`Z`, `+01:00`) it
 * is `run_at`; without one it is a local time in `zone` (`run_at_local` + `timezone`) or, on an
 * API without local times, in this browser's zone. A space may stand for the `T`. Whatever
 * else is wrong with it the API says (its 400 is shown); null when nothing was typed. */
export function rescheduleBody(typed, zone, local) {
  const v = typed.trim().replace(/^(\d{4}-\d{2}-\d{2})\s+(?=\d)/, '$1T');
  if (!v) return null;
  if (/(?:Z|[+-]\d{2}:\d{2})$/i.test(v)) return { run_at: v };
  if (local) return { run_at_local: v, timezone: zone.trim() };
  const d = new Date(v);
  return { run_at: Number.isNaN(d.getTime()) ? v : d.toISOString() };
}

/** `#/task/{id}` */
export async function taskView(main, id, ctx) {
  const feats = await features();
  const box = h('div', { id: 'task-detail' });
  main.replaceChildren(h('p', {}, route('#/tasks', '« tasks')), box);

  // What is typed into the reschedule fields survives the page's re-renders (and a refusal).
  const draft = { at: '', zone: browserZone() };
  let busy = false;
  /** Runs an action (one at a time), flashes its outcome (the API's message when it refuses:
   * a 400 names the field, a 409 the task's status) and shows the task as it now is. */
  async function act(label, fn) {
    if (busy) return;
    busy = true;
    try {
      const done = await fn();
      ctx.flash(`${label}: ${done || 'done'}`);
    } catch (e) {
      ctx.flash(`${label}: ${e.message}`, 'error');
    } finally {
      busy = false;
    }
    shown = null;
    try {
      await refresh();
    } catch (e) {
      ctx.flash(`${label}: ${e.message}`, 'error');
    }
  }

  function rescheduleForm(t) {
    const at = h('input', {
      type: 'text', id: 'reschedule-at', value: draft.at, size: 24, autocomplete: 'off', spellcheck: 'false',
      placeholder: 'YYYY-MM-DD HH:MM[:SS]',
      title: feats.rescheduleLocal
        ? 'The new time: a local date and time in the zone beside it (2026-12-01 09:00), or with an offset (2026-12-01T09:00:00+01:00, …Z)'
        : `The new time: a date and time in this browser's zone, ${browserZone()} (2026-12-01 09:00), or with an offset (2026-12-01T09:00:00+01:00, …Z)`,
      'aria-label': 'new run_at',
    });
    at.addEventListener('input', () => { draft.at = at.value; });
    let zone = null;
    if (feats.rescheduleLocal) {
      zone = h('input', { type: 'text', id: 'reschedule-tz', value: draft.zone, list: 'tz-names', size: 18, autocomplete: 'off', spellcheck: 'false', 'aria-label': 'IANA time zone of the new time' });
      zone.addEventListener('input', () => { draft.zone = zone.value; });
    }
    const form = h('form', { class: 'reschedule', id: 'reschedule-form' },
      h('label', {}, 'new time ', at),
      zone ? h('label', {}, 'in ', zone, h('datalist', { id: 'tz-names' }, zones().map((z) => h('option', { value: z })))) : h('span', { class: 'muted' }, `(${browserZone()})`),
      h('button', { type: 'submit', id: 'action-reschedule' }, 'Reschedule'));
    form.addEventListener('submit', (e) => {
      e.preventDefault();
      const body = rescheduleBody(draft.at, draft.zone, feats.rescheduleLocal);
      if (!body) {
        ctx.flash('reschedule: type the new time, e.g. 2026-12-01 09:00', 'error');
        return;
      }
      act('reschedule', async () => {
        const moved = await api.reschedule(t.task_id, body);
        draft.at = '';
        return `due at ${when(moved.run_at)} UTC`;
      });
    });
    return form;
  }

  let shown = null;
  async function refresh() {
    const t = await api.get(id);
    // Unchanged: keep the page as it is (and what is being typed into it).
    const json = JSON.stringify(t);
    if (json === shown) return t;
    shown = json;
    const actions = h('div', { class: 'actions' });
    if (t.status === 'scheduled') {
      actions.append(button('Cancel', () => act('cancel', () => api.cancel(t.task_id).then(() => 'cancelled')), { id: 'action-cancel', class: 'danger' }));
      if (feats.run) {
        actions.append(button('Run now', () => act('run now', async () => `due at ${when((await api.run(t.task_id)).run_at)} UTC`), { id: 'action-run' }));
      }
      if (feats.reschedule) actions.append(rescheduleForm(t));
    }
    if (t.status === 'failed') {
      actions.append(button('Retry', () => act('retry', () => api.retry(t.task_id).then(() => 'scheduled again')), { id: 'action-retry' }));
    }
    const headers = Object.entries(t.payload.headers || {});
    const attempts = t.attempts || [];
    box.replaceChildren(
      h('h1', {}, 'Task ', h('code', { id: 'task-id' }, t.task_id), ' ', statusBadge(t.status)),
      actions,
      dl([
        ['status', h('span', { id: 'task-status' }, t.status)],
        ['method', t.payload.method],
        ['url', externalLink(t.payload.url)],
        ['run_at', h('span', { id: 'task-run-at' }, when(t.run_at))],
        // Given as a local time (by its create or its last move).
        ...(t.run_at_local ? [['run_at (local)', h('span', { id: 'task-run-at-local' }, `${t.run_at_local} ${t.timezone || ''}`)]] : []),
        ['next attempt', when(t.next_attempt_at)],
        ['created', when(t.created_at)],
        ['updated', when(t.updated_at)],
        ['retry', `${t.retry.max_attempts} attempts, backoff ${t.retry.initial_backoff_seconds} s to ${t.retry.max_backoff_seconds} s`],
        ['timeout', `${t.timeout_seconds} s`],
        ['idempotency key', t.idempotency_key || '—'],
        // Tasks made by a schedule, on an API that has schedules.
        ...(t.occurrence && t.occurrence.schedule_id
          ? [['schedule', h('span', { id: 'task-schedule' }, route(`#/schedule/${encodeURIComponent(t.occurrence.schedule_id)}`, h('code', {}, String(t.occurrence.schedule_id))), ` planned ${when(t.occurrence.planned_at)} UTC${t.occurrence.triggered ? ' (triggered)' : ''}`)]]
          : []),
        ...(t.dead_letter
          ? [['dead letter', `${when(t.dead_letter.recorded_at)} after ${t.dead_letter.attempts} attempt${t.dead_letter.attempts === 1 ? '' : 's'}: ${t.dead_letter.last_error}`]]
          : []),
      ]),
      h('h2', {}, 'Headers'),
      headers.length
        ? table(['name', 'value'], headers.map(([k, v]) => h('tr', {}, h('td', {}, h('code', {}, k)), h('td', {}, v))), { id: 'headers-table' })
        : h('p', { class: 'muted' }, 'None.'),
      h('h2', {}, 'Payload'),
      h('pre', { id: 'payload-data' }, t.payload.data === undefined || t.payload.data === null ? 'null' : JSON.stringify(t.payload.data, null, 2)),
      h('h2', {}, 'Attempts'),
      attempts.length
        ? table(['#', 'started (UTC)', 'outcome', 'status code', 'error', 'duration', 'lateness'],
          attempts.map((a) => h('tr', { 'data-attempt': a.number },
            h('td', { class: 'num' }, String(a.number)),
            h('td', {}, when(a.started_at)),
            h('td', {}, h('span', { class: `badge o-${a.outcome}` }, a.outcome)),
            h('td', { class: 'num' }, a.status_code === null || a.status_code === undefined ? '—' : String(a.status_code)),
            h('td', { class: 'error-cell' }, a.error || ''),
            h('td', { class: 'num' }, ms(a.duration_ms)),
            h('td', { class: 'num' }, ms(lateness(t, a))),
          )), { id: 'attempts-table' })
        : h('p', { class: 'muted' }, 'No attempt yet.'),
      h('p', { class: 'muted' }, 'Lateness: when the first attempt started after run_at; a retry waits a jittered backoff, so its own lateness is not known.'),
    );
    return t;
  }
  const t = await refresh();
  return { refresh, every: FINAL.has(t.status) ? 0 : 2000 };
}

/** `#/dead?url=&error=` */
export async function deadView(main, query, ctx) {
  const f = { url: query.get('url') || '', error: query.get('error') || '' };
  const url = h('input', { name: 'url', id: 'dead-url', value: f.url, placeholder: 'URL contains…', size: 30 });
  const error = h('input', { name: 'error', id: 'dead-error', value: f.error, placeholder: 'error contains…', size: 30 });
  const form = h('form', { class: 'filters', id: 'dead-filters' }, h('label', {}, 'url ', url), h('label', {}, 'error ', error), h('button', { type: 'submit' }, 'Apply'));
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    location.hash = hashWith('#/dead', { url: url.value, error: error.value });
  });
  const results = h('div', { id: 'dead-results' });
  main.replaceChildren(
    h('h1', {}, 'Dead letters'),
    h('p', { class: 'muted' }, 'Failed tasks: every attempt used, or a permanent failure. Retry re-arms one now with a fresh attempt budget.'),
    form,
    results,
  );
  const matches = (t) => (!f.url || t.payload.url.includes(f.url)) && (!f.error || lastError(t).includes(f.error));
  let armed = null;

  async function retryAll(tasks) {
    let ok = 0;
    const failed = [];
    for (const t of tasks) {
      try {
        await api.retry(t.task_id);
        ok += 1;
      } catch (e) {
        failed.push(`${t.task_id}: ${e.message}`);
      }
    }
    ctx.flash(`retried ${ok} of ${tasks.length}${failed.length ? `; failed: ${failed.join('; ')}` : ''}`, failed.length ? 'error' : 'ok');
    await refresh();
  }

  async function refresh() {
    const r = await scan({ params: { status: 'failed' }, keep: matches, maxPages: 20 });
    const tasks = r.tasks;
    const rows = tasks.map((t) => h('tr', { 'data-task-id': t.task_id },
      h('td', {}, route(`#/task/${encodeURIComponent(t.task_id)}`, h('code', {}, t.task_id))),
      h('td', { class: 'url-cell' }, h('span', { class: 'url' }, t.payload.url)),
      h('td', {}, when(t.dead_letter ? t.dead_letter.recorded_at : t.updated_at)),
      h('td', { class: 'num' }, String((t.attempts || []).length)),
      h('td', { class: 'error-cell' }, lastError(t)),
      h('td', {}, button('Retry', async () => {
        try {
          await api.retry(t.task_id);
          ctx.flash(`retry ${t.task_id}: scheduled again`);
        } catch (e) {
          ctx.flash(`retry ${t.task_id}: ${e.message}`, 'error');
        }
        await refresh();
      }, { class: 'retry-one', 'data-task-id': t.task_id })),
    ));
    const all = tasks.length
      ? button(armed ? `Confirm: retry all ${tasks.length}` : `Retry all ${tasks.length} matching`, () => {
        if (!armed) {
          armed = setTimeout(() => { armed = null; refresh(); }, 5000);
          refresh();
          return;
        }
        clearTimeout(armed);
        armed = null;
        retryAll(tasks);
      }, { id: 'retry-all', class: armed ? 'danger' : '' })
      : null;
    results.replaceChildren(
      h('p', {}, `${tasks.length} failed task${tasks.length === 1 ? '' : 's'} matching, of ${r.read} read${r.next ? ' (the first ones only: more exist)' : ''}. `, all),
      tasks.length
        ? table(['task', 'url', 'failed at (UTC)', 'attempts', 'last error', ''], rows, { id: 'dead-table' })
        : h('p', { class: 'muted' }, 'No dead letters.'),
    );
  }
  await refresh();
  return { refresh, every: 5000 };
}
