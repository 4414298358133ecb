// The console's entry point: hash routes (#/overview, #/tasks, #/task/{id}, #/schedules,
// #/schedule/{id}, #/dead), the
// token prompt on 401, and each view's own refresh while it is shown.

import { onUnauthorized, setToken, forgetToken, token, ApiError, apiFeatures } from './api.js';
import { h } from './dom.js';
import { tasksView, taskView, deadView } from './views.js';
import { overviewView } from './overview.js';
import { schedulesView, scheduleView } from './schedules.js';

const main = document.getElementById('main');
const login = document.getElementById('login');
const flashEl = document.getElementById('flash');
const authState = document.getElementById('auth-state');
const forget = document.getElementById('forget-token');

let flashTimer = null;
function flash(text, kind = 'ok') {
  flashEl.textContent = text;
  flashEl.className = `flash ${kind === 'error' ? 'error' : 'ok'}`;
  flashEl.hidden = false;
  clearTimeout(flashTimer);
  flashTimer = setTimeout(() => { flashEl.hidden = true; }, 8000);
}

function showAuth() {
  const t = token();
  authState.textContent = t ? 'bearer token set (this tab)' : '';
  forget.hidden = !t;
}

onUnauthorized(() => {
  login.hidden = false;
  document.getElementById('token-input').focus();
});

document.getElementById('login-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const input = document.getElementById('token-input');
  setToken(input.value.trim());
  input.value = '';
  login.hidden = true;
  showAuth();
  show();
});

forget.addEventListener('click', () => {
  forgetToken();
  showAuth();
  show();
});

let timer = null;
let generation = 0;

async function show() {
  clearInterval(timer);
  timer = null;
  const gen = ++generation;
  const hash = location.hash || '#/overview';
  const [path, qs] = hash.slice(1).split('?');
  const query = new URLSearchParams(qs || '');
  const parts = path.split('/').filter(Boolean);
  for (const a of document.querySelectorAll('nav a')) {
    const nav = { task: 'tasks', schedule: 'schedules' }[parts[0]] || parts[0];
    a.classList.toggle('active', a.dataset.nav === nav);
  }
  // The Schedules tab only where the API has schedules (read from its /openapi.json).
  apiFeatures().then((f) => { document.getElementById('nav-schedules').hidden = !f.schedules; }, () => {});
  const ctx = { flash };
  try {
    let view;
    if (parts[0] === 'tasks') view = await tasksView(main, query, ctx);
    else if (parts[0] === 'task' && parts[1]) view = await taskView(main, decodeURIComponent(parts[1]), ctx);
    else if (parts[0] === 'schedules') view = await schedulesView(main, query, ctx);
    else if (parts[0] === 'schedule' && parts[1]) view = await scheduleView(main, decodeURIComponent(parts[1]), ctx);
    else if (parts[0] === 'dead') view = await deadView(main, query, ctx);
    else view = await overviewView(main, query, ctx);
    if (gen !== generation || !view || !view.every) return;
    let busy = false;
    timer = setInterval(async () => {
      if (busy || document.hidden || gen !== generation) return;
      busy = true;
      try {
        await view.refresh();
      } catch (e) {
        if (gen === generation) flash(describe(e), 'error');
      } finally {
        busy = false;
      }
    }, view.every);
  } catch (e) {
    if (gen !== generation) return;
    main.replaceChildren(h('p', { class: 'error', id: 'view-error' }, describe(e)));
  }
}

function describe(e) {
  if (e instanceof ApiError) {
    return e.status === 401 ? 'The API needs a token: enter one above.' : `API error ${e.status} ${e.code}: ${e.message}`;
  }
  return `Cannot reach the API: ${e.message}`;
}

window.addEventListener('hashchange', show);
showAuth();
show();
