// The monitor API: fetch with the session's CSRF token, and the server-sent event stream.

export const BASE = '/admin/worker-monitor';

export class ApiError extends Error {
  constructor(status, detail) {
    super(detail || `HTTP ${status}`);
    this.status = status;
    this.detail = detail;
  }
}

/** Who is signed in: {user, role, csrf_token} (null until /auth/me or /auth/login answers). */
export const session = { user: null, role: null, csrf: null };

const ROLE_RANK = { viewer: 1, operator: 2, admin: 3 };

/** Whether the signed-in role is at least `role`. The server checks again on every request. */
export function can(role) {
  return (ROLE_RANK[session.role] || 0) >= ROLE_RANK[role];
}

let onUnauthorized = () => {};
export function setUnauthorizedHandler(fn) {
  onUnauthorized = fn;
}

export async function request(path, { method = 'GET', body, signal } = {}) {
  const headers = { Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (method !== 'GET' && session.csrf) headers['X-CSRF-Token'] = session.csrf;
  const resp = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: 'same-origin',
    signal,
  });
  let data = null;
  const text = await resp.text();
  if (text) {
    try { data = JSON.parse(text); } catch { data = { detail: text.slice(0, 200) }; }
  }
  if (!resp.ok) {
    if (resp.status === 401 && !path.startsWith('/auth/login')) onUnauthorized();
    throw new ApiError(resp.status, data && data.detail);
  }
  return data;
}

export const get = (path, opts) => request(BASE + path, opts);
export const post = (path, body = {}) => request(BASE + path, { method: 'POST', body });
export const del = (path, body = {}) => request(BASE + path, { method: 'DELETE', body });
export const put = (path, body = {}) => request(BASE + path, { method: 'PUT', body });

export async function me() {
  const d = await request('/auth/me');
  Object.assign(session, { user: d.user, role: d.role, csrf: d.csrf_token });
  return d;
}

export async function login(username, password) {
  const d = await request('/auth/login', { method: 'POST', body: { username, password } });
  Object.assign(session, { user: d.user, role: d.role, csrf: d.csrf_token });
  return d;
}

export async function logout() {
  try { await request('/auth/logout', { method: 'POST' }); } finally {
    Object.assign(session, { user: null, role: null, csrf: null });
  }
}

export const enc = encodeURIComponent;

export function artifactUrl(jobId, name) {
  return `${BASE}/jobs/${enc(jobId)}/artifacts/${enc(name)}`;
}

/**
 * Subscribe to the `update` events of /stream ({overview, queues, ts}).
 * `onState` gets 'live' | 'reconnecting' | 'closed'. Returns a stop function.
 */
export function stream(onUpdate, onState) {
  let es = null;
  let stopped = false;
  let retry = null;
  const open = () => {
    es = new EventSource(`${BASE}/stream?interval_s=2`);
    es.addEventListener('open', () => onState('live'));
    es.addEventListener('update', (ev) => {
      onState('live');
      try { onUpdate(JSON.parse(ev.data)); } catch (err) { console.error('bad update event', err); }
    });
    es.addEventListener('error', () => {
      if (stopped) return;
      if (es.readyState === EventSource.CLOSED) {
        // The browser gave up (e.g. 401 after the session ended): check the session, then reopen.
        onState('closed');
        clearTimeout(retry);
        retry = setTimeout(async () => {
          try { await me(); if (!stopped) open(); } catch { onUnauthorized(); }
        }, 3000);
      } else {
        onState('reconnecting');
      }
    });
  };
  open();
  return () => {
    stopped = true;
    clearTimeout(retry);
    if (es) es.close();
  };
}

// One view's loads: only the newest answer lands; an older one arriving late, or any
// answer after drop() (the view is gone), is ignored.
export function newest(fetchFn, land, fail) {
  let seq = 0;
  const load = async (...args) => {
    const mine = ++seq;
    try {
      const got = await fetchFn(...args);
      if (mine === seq) land(got, ...args);
    } catch (err) {
      if (mine === seq) fail(err);
    }
  };
  load.drop = () => { seq++; };
  return load;
}
