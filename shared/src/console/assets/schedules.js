// The schedules list and one schedule: its plan, next runs (in its zone and in UTC), last
// occurrence and occurrences (GET /tasks?schedule_id=); pause, resume, trigger, delete.
// Shown only when the API's /openapi.json has /schedules (the AWS host may not).

import { api, call } from './api.js';
import { h, route, externalLink, table, button, statusBadge, when } from './dom.js';

const sched = (id) => `/schedules/${encodeURIComponent(id)}`;

export const schedulesApi = {
  list: (cursor) => call('GET', `/schedules?${new URLSearchParams(cursor ? { limit: 50, cursor } : { limit: 50 })}`),
  get: (id) => call('GET', sched(id)),
  patch: (id, body) => call('PATCH', sched(id), body),
  trigger: (id) => call('POST', `${sched(id)}/trigger`),
  remove: (id) => call('DELETE', sched(id)),
};

function plan(s) {
  if (s.cron) return `cron ${s.cron}`;
  if (s.every) return `every ${s.every}`;
  return '—';
}

/** `#/schedules?cursor=` */
export async function schedulesView(main, query) {
  const cursor = query.get('cursor') || '';
  const results = h('div', { id: 'schedule-results' });
  main.replaceChildren(h('h1', {}, 'Schedules'), results);
  async function refresh() {
    const page = await schedulesApi.list(cursor);
    const rows = page.schedules.map((s) => h('tr', { 'data-schedule-id': s.schedule_id, 'data-paused': String(s.paused) },
      h('td', {}, route(`#/schedule/${encodeURIComponent(s.schedule_id)}`, h('code', {}, s.schedule_id))),
      h('td', { class: 'plan' }, plan(s)),
      h('td', {}, s.timezone),
      h('td', { class: 'paused' }, s.paused ? 'paused' : 'active'),
      h('td', { class: 'next-run' }, s.next_runs && s.next_runs.length ? when(s.next_runs[0].utc) : '—'),
      h('td', { class: 'url-cell' }, h('span', { class: 'url' }, s.task.payload.url)),
    ));
    results.replaceChildren(
      rows.length
        ? table(['schedule', 'plan', 'zone', 'state', 'next run (UTC)', 'url'], rows, { id: 'schedules-table' })
        : h('p', { class: 'muted' }, 'No schedules.'),
      h('p', { class: 'pager' },
        cursor ? route('#/schedules', '« first page') : null, ' ',
        page.next_cursor ? route(`#/schedules?${new URLSearchParams({ cursor: page.next_cursor })}`, 'next page »') : null),
    );
  }
  await refresh();
  return { refresh, every: 3000 };
}

/** `#/schedule/{id}` */
export async function scheduleView(main, id, ctx) {
  const box = h('div', { id: 'schedule-detail' });
  main.replaceChildren(h('p', {}, route('#/schedules', '« schedules')), box);
  let busy = false;
  let confirmDelete = null;
  let gone = false;

  async function act(label, fn) {
    if (busy) return;
    busy = true;
    try {
      ctx.flash(`${label}: ${(await fn()) || 'done'}`);
    } catch (e) {
      ctx.flash(`${label}: ${e.message}`, 'error');
    } finally {
      busy = false;
    }
    if (!gone) await refresh();
  }

  async function refresh() {
    if (gone) return;
    const s = await schedulesApi.get(id);
    const occ = await api.list({ schedule_id: id, limit: 50 });
    const actions = h('div', { class: 'actions' },
      s.paused
        ? button('Resume', () => act('resume', async () => { await schedulesApi.patch(id, { paused: false }); return 'active'; }), { id: 'action-resume' })
        : button('Pause', () => act('pause', async () => { await schedulesApi.patch(id, { paused: true }); return 'paused'; }), { id: 'action-pause' }),
      button('Trigger now', () => act('trigger', async () => `task ${(await schedulesApi.trigger(id)).task_id} due now`), { id: 'action-trigger' }),
      button(confirmDelete ? 'Confirm: delete' : 'Delete', () => {
        if (!confirmDelete) {
          confirmDelete = setTimeout(() => { confirmDelete = null; refresh(); }, 5000);
          refresh();
          return;
        }
        clearTimeout(confirmDelete);
        confirmDelete = null;
        act('delete', async () => {
          await schedulesApi.remove(id);
          gone = true;
          location.hash = '#/schedules';
          return 'deleted';
        });
      }, { id: 'action-delete', class: 'danger' }));
    const runs = s.next_runs || [];
    const last = s.last_occurrence;
    const headers = Object.entries(s.task.payload.headers || {});
    box.replaceChildren(
      h('h1', {}, 'Schedule ', h('code', { id: 'schedule-id' }, s.schedule_id), ' ',
        h('span', { class: `badge ${s.paused ? 's-cancelled' : 's-scheduled'}`, id: 'schedule-state' }, s.paused ? 'paused' : 'active')),
      actions,
      h('dl', { class: 'facts' }, [
        ['plan', h('span', { id: 'schedule-plan' }, plan(s))],
        ['zone', s.timezone],
        ['start', when(s.start_at)],
        ['end', when(s.end_at)],
        ['method', s.task.payload.method],
        ['url', externalLink(s.task.payload.url)],
        ['retry', `${s.task.retry.max_attempts} attempts, backoff ${s.task.retry.initial_backoff_seconds} s to ${s.task.retry.max_backoff_seconds} s`],
        ['timeout', `${s.task.timeout_seconds} s`],
        ['created', when(s.created_at)],
      ].flatMap(([k, v]) => [h('dt', {}, k), h('dd', {}, v)])),
      h('h2', {}, 'Next runs'),
      runs.length
        ? table([`in ${s.timezone}`, 'UTC'], runs.map((r) => h('tr', {}, h('td', {}, r.local), h('td', {}, when(r.utc)))), { id: 'next-runs' })
        : h('p', { class: 'muted', id: 'next-runs-none' }, s.paused ? 'None while paused.' : 'None: the plan has ended.'),
      h('h2', {}, 'Last occurrence'),
      last
        ? h('p', { id: 'last-occurrence' }, route(`#/task/${encodeURIComponent(last.task_id)}`, h('code', {}, last.task_id)), ' ', statusBadge(last.status), ` planned ${when(last.planned_at)} UTC`)
        : h('p', { class: 'muted', id: 'last-occurrence' }, 'None yet.'),
      h('h2', {}, 'Occurrences'),
      occ.tasks.length
        ? table(['task', 'status', 'run_at (UTC)', 'attempts'], occ.tasks.map((t) => h('tr', { 'data-task-id': t.task_id, 'data-status': t.status },
          h('td', {}, route(`#/task/${encodeURIComponent(t.task_id)}`, h('code', {}, t.task_id))),
          h('td', {}, statusBadge(t.status)),
          h('td', {}, when(t.run_at)),
          h('td', { class: 'num' }, String((t.attempts || []).length)))), { id: 'occurrences-table' })
        : h('p', { class: 'muted' }, 'None yet.'),
      occ.next_cursor ? route(`#/tasks?${new URLSearchParams({ schedule_id: id })}`, 'all occurrences »') : null,
      h('h2', {}, 'Headers'),
      headers.length
        ? table(['name', 'value'], headers.map(([k, v]) => h('tr', {}, h('td', {}, h('code', {}, k)), h('td', {}, v))), { id: 'schedule-headers' })
        : h('p', { class: 'muted' }, 'None.'),
      h('h2', {}, 'Payload'),
      h('pre', { id: 'schedule-payload' }, s.task.payload.data === undefined || s.task.payload.data === null ? 'null' : JSON.stringify(s.task.payload.data, null, 2)),
    );
  }
  await refresh();
  return { refresh, every: 2000 };
}
