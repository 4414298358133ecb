// The API, called with relative same-origin paths only: on the local host the page and the
// API share an origin, and behind `task-scheduler console --endpoint` the proxy forwards these
// paths and adds the credentials. A bearer token, when the API asks for one (401), is kept in
// sessionStorage (this tab only) and sent as a header, never in a cookie or a URL.

const TOKEN_KEY = 'task-scheduler.console.token';

export class ApiError extends Error {
  constructor(status, code, message, field) {
    super(message);
    this.status = status;
    this.code = code;
    this.field = field;
  }
}

export function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function setToken(t) {
  sessionStorage.setItem(TOKEN_KEY, t);
}

export function forgetToken() {
  sessionStorage.removeItem(TOKEN_KEY);
}

let unauthorized = () => {};

/** `fn` is called whenever the API answers 401. */
export function onUnauthorized(fn) {
  unauthorized = fn;
}

export async function call(method, path, body) {
  if (!path.startsWith('/') || path.startsWith('//')) throw new Error('not a same-origin path');
  const headers = { Accept: 'application/json' };
  const t = token();
  if (t) headers.Authorization = `Bearer ${t}`;
  const init = { method, headers, credentials: 'omit', cache: 'no-store', redirect: 'error' };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const resp = await fetch(path, init);
  const text = await resp.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (resp.status === 401) unauthorized();
  if (!resp.ok) {
    const e = (data && data.error) || {};
    throw new ApiError(resp.status, e.code || `http_${resp.status}`, e.message || `HTTP ${resp.status}`, e.field);
  }
  return data;
}

const task = (id) => `/tasks/${encodeURIComponent(id)}`;

export const api = {
  list: (params) => {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== '') q.set(k, v);
    return call('GET', `/tasks?${q}`);
  },
  get: (id) => call('GET', task(id)),
  cancel: (id) => call('DELETE', task(id)),
  retry: (id) => call('POST', `${task(id)}/retry`),
  run: (id) => call('POST', `${task(id)}/run`),
  /** `when`: `{ run_at }`, or `{ run_at_local, timezone }`. */
  reschedule: (id, when) => call('PATCH', task(id), when),
};

let features = null;

/** The properties of an operation's JSON body schema (following one `$ref`), or none. */
function bodyProperties(doc, operation) {
  const content = operation && operation.requestBody && operation.requestBody.content;
  let schema = content && content['application/json'] && content['application/json'].schema;
  const ref = schema && schema.$ref;
  if (typeof ref === 'string' && ref.startsWith('#/components/schemas/')) {
    schema = ((doc.components || {}).schemas || {})[ref.slice('#/components/schemas/'.length)];
  }
  return (schema && schema.properties) || {};
}

/** What this API offers beyond the base routes, read from its OpenAPI document: `run`
 * (POST /tasks/{task_id}/run), `reschedule` (PATCH /tasks/{task_id}), `rescheduleLocal`
 * (its body takes `run_at_local` + `timezone`), `scheduleFilter` (GET /tasks?schedule_id=),
 * `schedules` (GET /schedules and /schedules/{schedule_id}).
 * An API without them gets a page without their controls. */
export async function apiFeatures() {
  if (features) return features;
  const doc = await call('GET', '/openapi.json');
  const paths = (doc && doc.paths) || {};
  const op = (path, method) => Boolean(paths[path] && paths[path][method]);
  const listParams = (paths['/tasks'] && paths['/tasks'].get && paths['/tasks'].get.parameters) || [];
  features = {
    run: op('/tasks/{task_id}/run', 'post'),
    reschedule: op('/tasks/{task_id}', 'patch'),
    rescheduleLocal: op('/tasks/{task_id}', 'patch')
      && 'run_at_local' in bodyProperties(doc, paths['/tasks/{task_id}'].patch),
    scheduleFilter: listParams.some((p) => p && p.name === 'schedule_id' && p.in === 'query'),
    schedules: op('/schedules', 'get') && op('/schedules/{schedule_id}', 'get'),
  };
  return features;
}

/** Pages of `GET /tasks` from `cursor`, 100 at a time, until `enough(items)` or `maxPages`;
 * `keep` chooses which tasks are kept. Returns the kept tasks, how many were read, and the
 * cursor to go on from (null when the list was read to its end). */
export async function scan({ params, keep = () => true, enough = () => false, maxPages = 10, cursor = null }) {
  const kept = [];
  let read = 0;
  let next = cursor;
  for (let page = 0; page < maxPages; page++) {
    const resp = await api.list({ ...params, limit: 100, cursor: next || undefined });
    read += resp.tasks.length;
    for (const t of resp.tasks) if (keep(t)) kept.push(t);
    next = resp.next_cursor;
    if (!next || enough(kept)) break;
  }
  return { tasks: kept, read, next };
}
