// Boot: who is signed in, the page shell (header, tabs), the live stream, and the tab views.

import * as api from './api.js';
import { h, fill, typing } from './dom.js';
import { t, getLang, setLang, clock } from './i18n.js';
import { TABS, route, onRoute, navigate, href, linkClick } from './router.js';
import { loginView } from './views/login.js';
import { overviewView } from './views/overview.js';
import { queuesView } from './views/queues.js';
import { jobsView } from './views/jobs.js';
import { workersView } from './views/workers.js';
import { schedulesView } from './views/schedules.js';
import { auditView } from './views/audit.js';

const VIEWS = {
  overview: overviewView, queues: queuesView, jobs: jobsView, schedules: schedulesView, workers: workersView, audit: auditView,
};
const root = document.getElementById('app');

/** What the stream (and the first fetch) tell every view. */
const state = { overview: null, queues: [], updatedAt: null, live: 'connecting' };
const ctx = { state, refresh: () => pullNow() };

let current = null; // {tab, view}
let stopStream = null;
let liveEl = null;
const headerSize = new ResizeObserver(([entry]) => {
  document.documentElement.style.setProperty('--top-h', `${Math.ceil(entry.target.getBoundingClientRect().height)}px`);
});

function renderLogin() {
  if (stopStream) { stopStream(); stopStream = null; }
  if (current) { current.view.destroy(); current = null; }
  fill(root, loginView(async () => { await start(); }));
  root.setAttribute('aria-busy', 'false');
}

function header(tab) {
  liveEl = h('span', { class: 'live', 'data-role': 'live', 'data-state': state.live });
  paintLive();
  const tabs = h('nav', { class: 'tabs', 'aria-label': t('app_title') },
    TABS.map((name, i) => h('a', {
      href: href(name), onclick: linkClick, class: 'tab', 'data-tab': name,
      'aria-current': name === tab ? 'page' : null, title: `${t(`tab_${name}`)} (${i + 1})`,
    }, t(`tab_${name}`))));
  const langBtn = h('button', {
    type: 'button', class: 'btn btn-ghost', 'data-role': 'lang', 'aria-label': t('language_label'),
    onclick: () => { setLang(getLang() === 'ko' ? 'en' : 'ko'); mountShell(); },
  }, t('language'));
  const who = h('span', { class: 'who', 'data-role': 'who' },
    h('span', { class: 'who-name' }, api.session.user),
    h('span', { class: `role role-${api.session.role}`, 'data-role': 'role' }, t(`role_${api.session.role}`)));
  const logout = h('button', {
    type: 'button', class: 'btn btn-ghost', 'data-role': 'logout',
    onclick: async () => { await api.logout().catch(() => {}); renderLogin(); },
  }, t('logout'));
  return h('header', { class: 'top' },
    h('div', { class: 'top-row' },
      h('a', { href: href('overview'), onclick: linkClick, class: 'brand' },
        h('span', { class: 'brand-mark', 'aria-hidden': 'true' }, 'jq'), h('span', {}, t('app_title'))),
      liveEl,
      h('span', { class: 'spacer' }),
      who, langBtn, logout),
    tabs);
}

function paintLive() {
  if (!liveEl) return;
  liveEl.dataset.state = state.live;
  const label = state.live === 'live' ? t('live') : state.live === 'closed' ? t('offline') : t('reconnecting');
  fill(liveEl, h('i', { class: 'dot', 'aria-hidden': 'true' }), label,
    state.updatedAt ? h('span', { class: 'live-at' }, ` · ${clock(state.updatedAt)}`) : null);
}

/** (Re)build header and the current tab: at sign-in and when the language changes. */
function mountShell() {
  const { tab, params } = route();
  if (current) current.view.destroy();
  const view = VIEWS[tab](ctx, params);
  current = { tab, view };
  document.title = `${t(`tab_${tab}`)} · ${t('app_title')}`;
  const top = header(tab);
  // every signed-in page has its one <h1>: the tab's name
  fill(root, top, h('main', { id: 'main', class: 'main' }, h('h1', { class: 'page-title', 'data-role': 'page-title' }, t(`tab_${tab}`)), view.el),
    h('footer', { class: 'foot muted' }, t('kbd_hint')));
  // Drawers open below the header on wide screens (the header keeps its buttons).
  headerSize.disconnect();
  headerSize.observe(top);
  root.setAttribute('aria-busy', 'false');
}

function onRouteChange({ tab, params }) {
  if (!api.session.user) return;
  if (current && current.tab === tab) {
    current.view.route(params);
    return;
  }
  mountShell();
  window.scrollTo(0, 0);
}

function applyUpdate(data) {
  state.overview = data.overview;
  state.queues = data.queues;
  state.updatedAt = data.ts || new Date().toISOString();
  paintLive();
  if (current) current.view.tick();
}

async function pullNow() {
  const [overview, queues] = await Promise.all([api.get('/overview'), api.get('/queues')]);
  applyUpdate({ overview, queues, ts: new Date().toISOString() });
}

async function start() {
  document.documentElement.lang = getLang();
  mountShell();
  pullNow().catch(() => {});
  if (stopStream) stopStream();
  stopStream = api.stream(applyUpdate, (s) => { state.live = s; paintLive(); });
}

api.setUnauthorizedHandler(() => {
  if (api.session.user) {
    Object.assign(api.session, { user: null, role: null, csrf: null });
    renderLogin();
  }
});

onRoute(onRouteChange);

document.addEventListener('keydown', (ev) => {
  if (!api.session.user || typing(ev) || ev.metaKey || ev.ctrlKey || ev.altKey) return;
  if (document.querySelector('dialog[open]')) return;
  const n = Number(ev.key);
  if (n >= 1 && n <= TABS.length) {
    ev.preventDefault();
    navigate(TABS[n - 1], {});
  } else if (ev.key === '/') {
    ev.preventDefault();
    if (route().tab !== 'jobs') navigate('jobs', {});
    requestAnimationFrame(() => document.querySelector('[data-role="search"]')?.focus());
  }
});

async function boot() {
  setLang(getLang());
  try {
    await api.me();
  } catch {
    renderLogin();
    return;
  }
  await start();
}

boot();
