// The URL is the state: /ui/<tab>?<filters>&job=<id>&queue=<name>. Shareable; Back works.
// The overview has one URL, /ui (the server sends /ui/overview there).

export const TABS = ['overview', 'queues', 'jobs', 'schedules', 'workers', 'audit'];
const listeners = new Set();

export function route() {
  const m = location.pathname.match(/^\/ui\/?([a-z]*)/);
  const tab = m && TABS.includes(m[1]) ? m[1] : 'overview';
  const params = {};
  for (const [k, v] of new URLSearchParams(location.search)) if (v !== '') params[k] = v;
  return { tab, params };
}

export function href(tab, params = {}) {
  const qs = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== '') qs.set(k, v);
  const q = qs.toString();
  return `${tab === 'overview' ? '/ui' : `/ui/${tab}`}${q ? `?${q}` : ''}`;
}

/** Go to a tab with these params. `replace` for typing in a filter (no history entry per key). */
export function navigate(tab, params = {}, { replace = false } = {}) {
  const url = href(tab, params);
  if (url === location.pathname + location.search) return;
  if (replace) history.replaceState(null, '', url);
  else history.pushState(null, '', url);
  emit();
}

/** Change some params of the current tab (null removes one). */
export function patch(changes, opts) {
  const { tab, params } = route();
  const next = { ...params };
  for (const [k, v] of Object.entries(changes)) {
    if (v === null || v === undefined || v === '') delete next[k];
    else next[k] = v;
  }
  navigate(tab, next, opts);
}

export function onRoute(fn) {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

function emit() {
  const r = route();
  for (const fn of listeners) fn(r);
}

window.addEventListener('popstate', emit);

/** Make a same-page link: plain <a href> (new tab / copy link work) that navigates in place on a click. */
export function linkClick(ev) {
  if (ev.defaultPrevented || ev.button !== 0 || ev.metaKey || ev.ctrlKey || ev.shiftKey || ev.altKey) return;
  const a = ev.currentTarget;
  const url = new URL(a.href, location.href);
  if (url.origin !== location.origin || !url.pathname.startsWith('/ui')) return;
  ev.preventDefault();
  if (url.pathname + url.search !== location.pathname + location.search) {
    history.pushState(null, '', url.pathname + url.search);
    emit();
  }
}
