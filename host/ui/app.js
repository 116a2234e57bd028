// fnhost dashboard: one page over the JSON admin API (`/.fnhost/...`), no build step, no
// dependencies, nothing fetched from anywhere but the fnhost that served it.
//
// The file has two halves. `logic` is pure view logic (formatting, the state timeline, routes,
// which actions a state allows) with no DOM in it; `node --test host/ui/app.test.js` checks it.
// The rest renders views into the page and polls the API; it only runs in a browser.
//
// Routes live in the fragment: `#/functions`, `#/invocations?function=F&state=S`,
// `#/invocations/ID`, `#/logs?function=F`. `#token=T` hands the page the admin token; it is
// kept in sessionStorage (this tab only) and removed from the visible URL at once.
'use strict';

(function () {
  // --- pure view logic -------------------------------------------------------------------------

  const STATES = ['queued', 'running', 'retrying', 'sleeping', 'waiting', 'succeeded', 'dead', 'cancelled', 'expired'];
  /** A run that ended one of these slept or waited (durable steps): it runs again later. */
  const SUSPENDED = ['sleeping', 'waiting'];
  const FINAL = ['succeeded', 'dead', 'cancelled', 'expired'];

  /** `1234` → `1.23 s`; null → `–`. Milliseconds in, a short human reading out. */
  function formatDuration(ms) {
    if (ms === null || ms === undefined || !Number.isFinite(ms) || ms < 0) return '–';
    if (ms < 1000) return `${Math.round(ms)} ms`;
    if (ms < 60000) {
      const s = ms / 1000;
      return `${trim(s.toFixed(s < 10 ? 2 : 1))} s`;
    }
    const seconds = Math.round(ms / 1000);
    if (seconds < 3600) {
      const m = Math.floor(seconds / 60);
      const s = seconds % 60;
      return s ? `${m} min ${s} s` : `${m} min`;
    }
    const minutes = Math.round(ms / 60000);
    const h = Math.floor(minutes / 60);
    const m = minutes % 60;
    return m ? `${h} h ${m} min` : `${h} h`;
  }

  /** `1073741824` → `1 GiB`. */
  function formatBytes(n) {
    if (n === null || n === undefined || !Number.isFinite(n)) return '–';
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) {
      n /= 1024;
      i += 1;
    }
    return `${trim(n.toFixed(1))} ${units[i]}`;
  }

  function trim(fixed) {
    return fixed.includes('.') ? fixed.replace(/\.?0+$/, '') : fixed;
  }

  function pad(n, width) {
    return String(n).padStart(width || 2, '0');
  }

  /**
   * An RFC 3339 time as the viewer reads it: `text` in local time (`2026-12-01 07:05:09`),
   * `title` in UTC with milliseconds, for the hover. Null or garbage → `–`.
   */
  function formatTime(iso) {
    const d = iso ? new Date(iso) : null;
    if (!d || Number.isNaN(d.getTime())) return { text: '–', title: '' };
    const text =
      `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
      `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
    const title =
      `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())} ` +
      `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())}.` +
      `${pad(d.getUTCMilliseconds(), 3)} UTC`;
    return { text, title };
  }

  /** `in 4 min` / `12 s ago` / `now`, from `iso` as seen at `nowMs`. */
  function relativeTime(iso, nowMs) {
    const t = iso ? Date.parse(iso) : NaN;
    if (Number.isNaN(t)) return '';
    const delta = t - nowMs;
    if (Math.abs(delta) < 1000) return 'now';
    const span = formatDuration(Math.abs(delta) < 60000 ? Math.round(Math.abs(delta) / 1000) * 1000 : Math.abs(delta));
    return delta > 0 ? `in ${span}` : `${span} ago`;
  }

  /** Milliseconds between two RFC 3339 times, or null. */
  function between(fromIso, toIso) {
    const a = fromIso ? Date.parse(fromIso) : NaN;
    const b = toIso ? Date.parse(toIso) : NaN;
    return Number.isNaN(a) || Number.isNaN(b) ? null : Math.max(0, b - a);
  }

  /** What the UI calls a function: a schedule makes it `scheduled`. */
  function functionMode(fn) {
    return fn && fn.schedule ? 'scheduled' : (fn && fn.mode) || 'sync';
  }

  /** The admin operations a state allows, in the order the buttons show. */
  function actionsFor(state) {
    switch (state) {
      case 'dead':
        return ['replay'];
      case 'retrying':
        return ['run-now', 'cancel'];
      case 'queued':
      case 'sleeping':
      case 'waiting':
        return ['cancel'];
      default:
        return [];
    }
  }

  /** What each action's button says and what its confirmation asks. */
  const ACTIONS = {
    replay: { label: 'Replay', confirm: 'Replay this invocation, running it again with the request it was given?' },
    cancel: { label: 'Cancel', confirm: 'Cancel this invocation so that it does not run (again)?' },
    'run-now': { label: 'Run retry now', confirm: 'Run the waiting retry now instead of at its scheduled time?' },
  };

  /**
   * The state timeline of an invocation from its status and attempts (oldest first):
   * `[{state, at, note}]`, where `at` may be null when the API does not say when. A replay
   * starts the attempt count again, so an attempt numbered no higher than the one before it
   * means the one before ended the invocation dead and an admin replayed it.
   */
  function buildTimeline(status, attempts) {
    const out = [{ state: 'queued', at: status.created_at, note: 'accepted (202)' }];
    const list = attempts || [];
    list.forEach((a, i) => {
      const last = i === list.length - 1;
      const replayed = !last && list[i + 1].attempt <= a.attempt;
      if (a.outcome === 'expired') {
        // Claimed too late: it never ran.
        out.push({ state: 'expired', at: a.finished_at, note: a.error || 'not run: past max_event_age' });
        if (replayed) out.push({ state: 'queued', at: null, note: 'replayed' });
        return;
      }
      out.push({ state: 'running', at: a.started_at, note: `attempt ${a.attempt}` });
      if (!a.finished_at) return;
      if (SUSPENDED.includes(a.outcome)) {
        // Slept or waited (no attempt spent): it runs again from the top when due.
        const entry = { state: a.outcome, at: a.finished_at, note: a.error || a.outcome };
        if (last && status.state === a.outcome) entry.next = status.next_attempt_at || null;
        out.push(entry);
        return;
      }
      if (a.outcome === 'succeeded') {
        out.push({ state: 'succeeded', at: a.finished_at, note: `attempt ${a.attempt} succeeded` });
        return;
      }
      const failed = `attempt ${a.attempt} failed${a.error ? `: ${a.error}` : ''}`;
      if (replayed) {
        out.push({ state: 'dead', at: a.finished_at, note: failed });
        out.push({ state: 'queued', at: null, note: 'replayed' });
      } else if (!last) {
        out.push({ state: 'retrying', at: a.finished_at, note: failed });
      } else if (status.state === 'dead') {
        out.push({ state: 'dead', at: status.finished_at || a.finished_at, note: failed });
      } else if (status.state === 'retrying') {
        const next = status.next_attempt_at ? 'next attempt scheduled' : 'next attempt pending';
        out.push({ state: 'retrying', at: a.finished_at, note: `${failed}; ${next}`, next: status.next_attempt_at || null });
      } else {
        out.push({ state: 'retrying', at: a.finished_at, note: failed });
      }
    });
    const tail = out[out.length - 1];
    if (tail.state !== status.state) {
      // What the attempts do not show: cancelled, dead without an attempt record (interrupted
      // too often), queued again (replayed), running before its attempt is recorded.
      const at =
        status.state === 'running' ? status.started_at :
        FINAL.includes(status.state) ? status.finished_at :
        status.state === 'retrying' ? null : null;
      const note =
        status.state === 'queued' ? 'waiting for a worker' :
        status.state === 'retrying' ? (status.last_error || 'waiting to retry') :
        status.state === 'dead' ? (status.last_error || 'no attempts left') :
        status.state === 'cancelled' ? 'cancelled by an admin' :
        status.state === 'running' ? `attempt ${status.attempts || 1}` : '';
      const entry = { state: status.state, at: at || null, note };
      if (status.state === 'retrying') entry.next = status.next_attempt_at || null;
      out.push(entry);
    }
    return out;
  }

  /**
   * Routes in the fragment. `#token=T` (possibly `#token=T&view=/invocations/ID`) carries the
   * admin token: `{token, path}`, where `path` is the route to show.
   */
  function parseFragment(hash) {
    const raw = (hash || '').replace(/^#/, '');
    if (raw.startsWith('/') || raw === '') return { token: null, path: raw || '/functions' };
    const params = new URLSearchParams(raw);
    const token = params.get('token');
    const view = params.get('view');
    return { token: token || null, path: view && view.startsWith('/') ? view : '/functions' };
  }

  /** `/invocations?function=a&state=dead` → `{view: 'invocations', function: 'a', state: 'dead'}`. */
  function parseRoute(path) {
    const [p, q] = (path || '').split('?');
    const params = new URLSearchParams(q || '');
    const parts = p.split('/').filter(Boolean).map(decodeURIComponent);
    if (parts[0] === 'invocations' && parts[1]) return { view: 'invocation', id: parts[1] };
    if (parts[0] === 'invocations') {
      const state = params.get('state');
      return {
        view: 'invocations',
        function: params.get('function') || '',
        state: STATES.includes(state) ? state : '',
      };
    }
    if (parts[0] === 'logs') return { view: 'logs', function: params.get('function') || '' };
    if (parts[0] === 'deploys') return { view: 'deploys' };
    return { view: 'functions' };
  }

  /** The inverse of [`parseRoute`]: the fragment path of a route. */
  function routePath(route) {
    const query = (pairs) => {
      const q = new URLSearchParams(pairs.filter(([, v]) => v)).toString();
      return q ? `?${q}` : '';
    };
    switch (route.view) {
      case 'invocation':
        return `/invocations/${encodeURIComponent(route.id)}`;
      case 'invocations':
        return `/invocations${query([['function', route.function], ['state', route.state]])}`;
      case 'logs':
        return `/logs${query([['function', route.function]])}`;
      case 'deploys':
        return '/deploys';
      default:
        return '/functions';
    }
  }

  /** The `GET /.fnhost/invocations` URL for a list filter. */
  function invocationsUrl(filter, limit) {
    const q = new URLSearchParams();
    if (filter.function) q.set('function', filter.function);
    if (filter.state) q.set('state', filter.state);
    q.set('limit', String(limit || 100));
    return `/.fnhost/invocations?${q}`;
  }

  /** What an empty view says, so the reader knows what to do next. */
  function emptyMessage(view, ctx) {
    const c = ctx || {};
    switch (view) {
      case 'functions':
        return 'no functions yet: put NAME.wasm files in the functions directory (fnhost build makes them), then reload';
      case 'invocations':
        if (c.filtered) return 'no invocations match these filters: clear them to see every invocation';
        if (!c.backgroundCount) {
          return 'no background functions yet: name one `*-background` or set `background = true` in fnhost.toml';
        }
        return 'no invocations yet: POST to /.netlify/functions/NAME of a background function to start one';
      case 'logs':
        return c.function
          ? `no output from ${c.function} yet: what it prints to stdout or stderr appears here as it runs`
          : 'no output yet: what functions print to stdout or stderr appears here as they run';
      case 'steps':
        return 'no durable steps recorded (fnhost:function/steps)';
      case 'attempts':
        return 'no attempts yet: it is waiting for a worker';
      case 'deliveries':
        return 'no destinations: set on_success / on_failure in fnhost.toml to have results delivered';
      case 'invocation-logs':
        return 'this invocation printed nothing';
      case 'deploys':
        return 'no deploys yet: `fnhost deploy DIR --url URL` stores one; nodes started with --deployed serve the published one';
      default:
        return 'nothing here yet';
    }
  }

  /** The function's routes and methods as one line: `GET, POST /api/items/:id`. */
  function routesLine(fn) {
    const methods = fn.methods && fn.methods.length ? fn.methods.join(', ') : 'any method';
    const routes = fn.routes && fn.routes.length ? fn.routes.join('  ') : `/.netlify/functions/${fn.name}`;
    return `${methods} ${routes}`;
  }

  /** Appends `more` to `lines`, keeping the newest `cap`. */
  function appendCapped(lines, more, cap) {
    const all = lines.concat(more);
    return all.length > cap ? all.slice(all.length - cap) : all;
  }

  /** Ids in `next` not in `prev` (new rows to highlight). */
  function newIds(prev, next) {
    const seen = new Set(prev.map((s) => s.id));
    return next.filter((s) => !seen.has(s.id)).map((s) => s.id);
  }

  /** The schedule operations a scheduled function allows: pause or resume, and run now. */
  function scheduleActionsFor(fn) {
    if (!fn || !fn.schedule) return [];
    return [fn.paused ? 'resume' : 'pause', 'run'];
  }

  const SCHEDULE_ACTIONS = {
    pause: { label: 'Pause schedule', confirm: 'Pause this schedule on every node (runs under way finish)?' },
    resume: { label: 'Resume schedule', confirm: 'Resume this schedule?' },
    run: { label: 'Run now', confirm: 'Run this function once now, outside its schedule?' },
  };

  const logic = {
    STATES, FINAL, SUSPENDED, ACTIONS, formatDuration, formatBytes, formatTime, relativeTime, between,
    functionMode, actionsFor, scheduleActionsFor, SCHEDULE_ACTIONS, buildTimeline, parseFragment, parseRoute, routePath,
    invocationsUrl, emptyMessage, routesLine, appendCapped, newIds,
  };
  if (typeof module === 'object' && module.exports) module.exports = logic;
  if (typeof document === 'undefined') return;

  // --- the page --------------------------------------------------------------------------------

  const TOKEN_KEY = 'fnhost.adminToken';
  const POLL_MS = 1000;
  const TAIL_CAP = 1000;
  const $ = (sel) => document.querySelector(sel);

  /** `h('a', {href: '#'}, 'text', child)`: an element; strings become text, never HTML. */
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === 'class') el.className = v;
      else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v === true ? '' : String(v));
    }
    for (const c of children.flat(Infinity)) {
      if (c === null || c === undefined || c === false) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }

  function timeEl(iso) {
    const t = formatTime(iso);
    return iso ? h('time', { datetime: iso, title: t.title }, t.text) : h('span', { class: 'muted' }, '–');
  }

  function stateBadge(state) {
    return h('span', { class: `state state-${state}`, 'data-state': state }, state);
  }

  function empty(text) {
    return h('p', { class: 'empty' }, text);
  }

  function section(title, ...children) {
    return h('section', { class: 'panel' }, h('h2', {}, title), ...children);
  }

  function table(cls, headers, rows) {
    return h('div', { class: 'scroll' },
      h('table', { class: cls },
        h('thead', {}, h('tr', {}, headers.map((x) => h('th', { scope: 'col' }, x)))),
        h('tbody', {}, rows)));
  }

  /** A row cell with a label the narrow layout shows in front of it. */
  function td(label, ...children) {
    return h('td', { 'data-label': label }, ...children);
  }

  // --- token and API ---

  function token() {
    return sessionStorage.getItem(TOKEN_KEY);
  }

  class ApiError extends Error {
    constructor(status, text) {
      super(text || `HTTP ${status}`);
      this.status = status;
    }
  }

  async function api(path, options) {
    const opts = options || {};
    const headers = { accept: 'application/json' };
    const t = token();
    if (t) headers.authorization = `Bearer ${t}`;
    let resp;
    try {
      resp = await fetch(path, { method: opts.method || 'GET', headers, cache: 'no-store' });
    } catch (e) {
      throw new ApiError(0, 'fnhost did not answer');
    }
    if (resp.status === 401) {
      sessionStorage.removeItem(TOKEN_KEY);
      showLogin('The admin token was refused: enter the current one.');
      throw new ApiError(401, 'the admin token was refused');
    }
    const text = await resp.text();
    if (!resp.ok) throw new ApiError(resp.status, text.trim() || `HTTP ${resp.status}`);
    return text ? JSON.parse(text) : null;
  }

  // --- the shell: login, nav, routing, polling ---

  let current = null; // {route, stop()}: the view on screen
  let functionsCache = null;

  function setBanner(text) {
    const b = $('#banner');
    b.textContent = text || '';
    b.hidden = !text;
  }

  function showLogin(message) {
    stopView();
    $('#main').replaceChildren();
    $('#nav').hidden = true;
    $('#logout').hidden = true;
    $('#login').hidden = false;
    $('#login-message').textContent = message || '';
    $('#login-message').hidden = !message;
    $('#token').focus();
  }

  function stopView() {
    if (current) current.stop();
    current = null;
  }

  function go(route) {
    location.hash = `#${routePath(route)}`;
  }

  function render() {
    if (!token()) {
      showLogin('');
      return;
    }
    $('#login').hidden = true;
    $('#nav').hidden = false;
    $('#logout').hidden = false;
    const route = parseRoute(parseFragment(location.hash).path);
    stopView();
    setBanner('');
    for (const a of document.querySelectorAll('#nav a')) {
      const on = a.dataset.view === route.view || (a.dataset.view === 'invocations' && route.view === 'invocation');
      a.classList.toggle('active', on);
      if (on) a.setAttribute('aria-current', 'page');
      else a.removeAttribute('aria-current');
    }
    const main = $('#main');
    main.replaceChildren();
    main.dataset.view = route.view;
    const views = { functions: functionsView, invocations: invocationsView, invocation: detailView, logs: logsView, deploys: deploysView };
    current = views[route.view](main, route);
  }

  /**
   * Runs `tick` now and every `ms` after the previous run ends, until stopped; failures show
   * in the banner and polling goes on.
   */
  function poller(tick, ms) {
    let stopped = false;
    let timer = null;
    const run = async () => {
      timer = null;
      try {
        await tick();
        if (!stopped) setBanner('');
      } catch (e) {
        if (stopped || e.status === 401) return;
        setBanner(`${e.message} — retrying`);
      }
      if (!stopped) timer = setTimeout(run, ms);
    };
    run();
    return {
      stop() {
        stopped = true;
        if (timer) clearTimeout(timer);
      },
      now() {
        if (stopped) return;
        if (timer) clearTimeout(timer);
        run();
      },
    };
  }

  /** Replaces `box`'s content with `build(data)` when `data` differs from the last time. */
  function renderer(box) {
    let last = null;
    return (data, build) => {
      const key = JSON.stringify(data);
      if (key === last) return;
      box.replaceChildren(...[].concat(build(data)));
      last = key;
    };
  }

  async function loadFunctions() {
    functionsCache = await api('/.fnhost/functions');
    return functionsCache;
  }

  // --- views ---

  function functionsView(main) {
    main.append(h('h1', {}, 'Functions'));
    const box = h('div', { id: 'functions', class: 'cards' });
    main.append(box);
    const show = renderer(box);
    const p = poller(async () => {
      const fns = await loadFunctions();
      show(fns, (list) => (list.length ? list.map((fn) => functionCard(fn, () => p.now())) : empty(emptyMessage('functions'))));
    }, 5000);
    return p;
  }

  async function scheduleAct(fn, action, refresh) {
    if (!window.confirm(SCHEDULE_ACTIONS[action].confirm)) return;
    try {
      await api(`/.fnhost/functions/${encodeURIComponent(fn.name)}/schedule/${action}`, { method: 'POST' });
      setBanner('');
    } catch (e) {
      if (e.status !== 401) setBanner(`${SCHEDULE_ACTIONS[action].label} refused: ${e.message}`);
    }
    refresh();
  }

  function functionCard(fn, refresh) {
    const mode = functionMode(fn);
    const lh = fn.last_hour || {};
    const rows = [
      ['Routes', routesLine(fn)],
      ['World', fn.world || '–'],
      ['Budget', formatDuration(fn.timeout_ms)],
      ['Memory', formatBytes(fn.memory_bytes)],
    ];
    if (fn.mode === 'background' || fn.schedule) {
      rows.push(['Retries', fn.retry_delays_ms && fn.retry_delays_ms.length
        ? `after ${fn.retry_delays_ms.map(formatDuration).join(', ')}` : 'none']);
      rows.push(['On success', fn.on_success || '–']);
      rows.push(['On failure', fn.on_failure || '–']);
    }
    if (fn.concurrency !== null && fn.concurrency !== undefined) rows.push(['Concurrency', String(fn.concurrency)]);
    const dl = h('dl', { class: 'fields' }, rows.map(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]));
    if (fn.schedule) {
      dl.append(h('dt', {}, 'Schedule'), h('dd', {}, h('code', {}, fn.schedule),
        ` ${fn.schedule_tz || 'UTC'}`, fn.paused ? [' ', h('span', { class: 'bad paused' }, 'paused')] : null));
      dl.append(h('dt', {}, 'Next run'), h('dd', {}, timeEl(fn.next_run), ' ',
        h('span', { class: 'muted' }, relativeTime(fn.next_run, Date.now()))));
    }
    const failures = lh.failures || 0;
    const stats = h('div', { class: 'stats', title: 'the last hour' },
      h('span', {}, h('b', {}, String(lh.invocations || 0)), ' invocations'),
      h('span', { class: failures ? 'bad' : '' }, h('b', {}, String(failures)), failures === 1 ? ' failure' : ' failures'),
      h('span', {}, 'p50 ', h('b', {}, formatDuration(lh.p50_ms))),
      h('span', {}, 'p99 ', h('b', {}, formatDuration(lh.p99_ms))));
    const links = h('div', { class: 'links' },
      mode !== 'sync' ? h('a', { href: `#${routePath({ view: 'invocations', function: fn.name })}` }, 'Invocations') : null,
      h('a', { href: `#${routePath({ view: 'logs', function: fn.name })}` }, 'Tail logs'));
    const actions = scheduleActionsFor(fn).map((a) =>
      h('button', { type: 'button', 'data-schedule-action': a, onclick: () => scheduleAct(fn, a, refresh || (() => {})) },
        SCHEDULE_ACTIONS[a].label));
    return h('article', { class: 'card', 'data-function': fn.name },
      h('header', {}, h('h2', {}, fn.name), h('span', { class: `mode mode-${mode}` }, mode)),
      dl, actions.length ? h('div', { class: 'actions' }, actions) : null,
      h('p', { class: 'caption' }, 'last hour'), stats, links);
  }

  function invocationsView(main, route) {
    main.append(h('h1', {}, 'Invocations'));
    const fnSelect = h('select', { id: 'filter-function', 'aria-label': 'function' }, h('option', { value: '' }, 'all functions'));
    const stateSelect = h('select', { id: 'filter-state', 'aria-label': 'state' },
      h('option', { value: '' }, 'any state'), STATES.map((s) => h('option', { value: s }, s)));
    stateSelect.value = route.state;
    const onChange = () => go({ view: 'invocations', function: fnSelect.value, state: stateSelect.value });
    fnSelect.addEventListener('change', onChange);
    stateSelect.addEventListener('change', onChange);
    main.append(h('div', { class: 'toolbar' },
      h('label', {}, 'Function ', fnSelect), h('label', {}, 'State ', stateSelect),
      h('span', { class: 'muted live' }, 'live · updates every second')));
    const box = h('div', { id: 'invocations' });
    main.append(box);
    const show = renderer(box);
    let known = null;
    let fns = null;
    return poller(async () => {
      if (!fns) {
        fns = await loadFunctions();
        const names = new Set(fns.filter((f) => f.mode === 'background' || f.schedule).map((f) => f.name));
        if (route.function) names.add(route.function);
        fnSelect.append(...[...names].sort().map((n) => h('option', { value: n }, n)));
        fnSelect.value = route.function;
      }
      const list = await api(invocationsUrl(route));
      const fresh = known ? new Set(newIds(known, list)) : new Set();
      known = list;
      const ctx = {
        filtered: Boolean(route.function || route.state),
        backgroundCount: fns.filter((f) => f.mode === 'background' || f.schedule).length,
      };
      show(list, (l) => (l.length ? invocationTable(l, fresh) : empty(emptyMessage('invocations', ctx))));
    }, POLL_MS);
  }

  function invocationTable(list, fresh) {
    const rows = list.map((s) => h('tr', { 'data-id': s.id, class: fresh.has(s.id) ? 'fresh' : '' },
      td('Id', h('a', { href: `#${routePath({ view: 'invocation', id: s.id })}`, class: 'id' }, s.id)),
      td('Function', s.function),
      td('State', stateBadge(s.state)),
      td('Attempts', `${s.attempts}/${s.max_attempts}`),
      td('Created', timeEl(s.created_at)),
      td('Duration', formatDuration(between(s.started_at, s.finished_at))),
      td('Last error', s.last_error ? h('span', { class: 'error' }, s.last_error) : h('span', { class: 'muted' }, '–'))));
    return table('list', ['Id', 'Function', 'State', 'Attempts', 'Created', 'Duration', 'Last error'], rows);
  }

  function detailView(main, route) {
    const id = route.id;
    main.append(h('p', { class: 'back' }, h('a', { href: '#/invocations' }, '← all invocations')));
    main.append(h('h1', {}, 'Invocation ', h('code', { class: 'id' }, id)));
    const actions = h('div', { id: 'actions', class: 'actions' });
    const box = h('div', { id: 'detail' });
    main.append(actions, box);
    const show = renderer(box);
    const showActions = renderer(actions);
    const p = poller(async () => {
      let detail;
      try {
        detail = await api(`/.fnhost/invocations/${encodeURIComponent(id)}/detail`);
      } catch (e) {
        if (e.status === 404) {
          show(null, () => empty(`no invocation ${id}: it may have expired (finished invocations are kept 7 days)`));
          showActions(null, () => []);
          return;
        }
        throw e;
      }
      showActions(detail.status.state, (state) => actionsFor(state).map((a) =>
        h('button', { type: 'button', 'data-action': a, class: a === 'cancel' ? 'danger' : '', onclick: () => act(a) }, ACTIONS[a].label)));
      show(detail, detailSections);
    }, POLL_MS);

    async function act(action) {
      if (!window.confirm(ACTIONS[action].confirm)) return;
      try {
        await api(`/.fnhost/invocations/${encodeURIComponent(id)}/${action}`, { method: 'POST' });
        setBanner('');
      } catch (e) {
        if (e.status !== 401) setBanner(`${ACTIONS[action].label} refused: ${e.message}`);
      }
      p.now();
    }
    return p;
  }

  function detailSections(d) {
    const s = d.status;
    const summary = h('dl', { class: 'fields', id: 'summary' },
      h('dt', {}, 'Function'), h('dd', {}, h('a', { href: `#${routePath({ view: 'invocations', function: s.function })}` }, s.function)),
      h('dt', {}, 'State'), h('dd', {}, stateBadge(s.state)),
      h('dt', {}, 'Attempts'), h('dd', {}, `${s.attempts} of ${s.max_attempts}`),
      s.deploy ? [h('dt', {}, 'Deploy'), h('dd', {}, h('a', { href: '#/deploys' }, h('code', { id: 'deploy' }, s.deploy)))] : null,
      h('dt', {}, 'Created'), h('dd', {}, timeEl(s.created_at)),
      h('dt', {}, 'Started'), h('dd', {}, timeEl(s.started_at)),
      h('dt', {}, 'Finished'), h('dd', {}, timeEl(s.finished_at)),
      s.next_attempt_at ? [h('dt', {}, 'Next attempt'), h('dd', {}, timeEl(s.next_attempt_at))] : null,
      s.waiting_for ? [h('dt', {}, 'Waiting for'), h('dd', { id: 'waiting-for' }, 'event ', h('code', {}, s.waiting_for.event),
        ' with key ', h('code', {}, s.waiting_for.key), ' (step ', h('code', {}, s.waiting_for.step), ') until ', timeEl(s.waiting_for.until))] : null,
      s.last_error ? [h('dt', {}, 'Last error'), h('dd', { class: 'error' }, s.last_error)] : null);

    const timeline = h('ol', { class: 'timeline', id: 'timeline' }, buildTimeline(s, d.attempts).map((e) =>
      h('li', { 'data-state': e.state }, stateBadge(e.state), ' ', e.at ? timeEl(e.at) : h('span', { class: 'muted' }, '–'),
        h('span', { class: 'note' }, e.note), e.next ? [' at ', timeEl(e.next)] : null)));

    const attempts = d.attempts.length
      ? table('list', ['Attempt', 'Started', 'Duration', 'Outcome', 'Error'], d.attempts.map((a) => h('tr', { 'data-attempt': a.attempt },
        td('Attempt', String(a.attempt)), td('Started', timeEl(a.started_at)),
        td('Duration', formatDuration(a.duration_ms !== null && a.duration_ms !== undefined ? a.duration_ms : between(a.started_at, a.finished_at))),
        td('Outcome', a.outcome ? stateBadge(a.outcome) : h('span', { class: 'muted' }, 'running')),
        td('Error', a.error ? h('span', { class: 'error' }, a.error) : h('span', { class: 'muted' }, '–')))))
      : empty(emptyMessage('attempts'));

    const steps = s.steps && s.steps.length
      ? table('list', ['Step', 'Recorded', 'Size'], s.steps.map((st) => h('tr', { 'data-step': st.name },
        td('Step', h('code', {}, st.name)), td('Recorded', timeEl(st.at)), td('Size', formatBytes(st.size)))))
      : empty(emptyMessage('steps'));

    const result = s.result
      ? [h('p', {}, 'Status ', h('b', {}, String(s.result.status))), headersTable(s.result.headers),
        h('pre', { class: 'body', id: 'result-body' }, s.result.body || '(empty body)')]
      : [empty(FINAL.includes(s.state) ? 'no result was stored' : 'no result yet')];

    const deliveries = d.deliveries && d.deliveries.length
      ? table('list', ['Destination', 'State', 'Attempts', 'Last error'], d.deliveries.map((x) => h('tr', {},
        td('Destination', h('code', {}, x.url)), td('State', stateBadge(x.state)), td('Attempts', String(x.attempts)),
        td('Last error', x.last_error ? h('span', { class: 'error' }, x.last_error) : h('span', { class: 'muted' }, '–')))))
      : empty(emptyMessage('deliveries'));

    const r = d.request || {};
    const request = [h('p', {}, h('code', {}, `${r.method || ''} ${r.uri || ''}`)), headersTable(r.headers || []),
      h('pre', { class: 'body' }, r.body || '(empty body)')];

    const logs = d.logs && d.logs.length
      ? h('pre', { class: 'logs', id: 'invocation-logs' }, d.logs.map((l) => h('span', { class: `line ${l.stream}` },
        h('span', { class: 'muted', title: formatTime(l.at).title }, `#${l.attempt} ${l.stream} `), l.line, '\n')))
      : empty(emptyMessage('invocation-logs'));

    return [
      h('div', { class: 'grid' }, section('Summary', summary), section('Timeline', timeline)),
      h('section', { class: 'panel', id: 'attempts' }, h('h2', {}, 'Attempts'), attempts),
      h('section', { class: 'panel', id: 'steps' }, h('h2', {}, 'Durable steps'), steps),
      section('Logs', logs),
      section('Result', ...result),
      h('section', { class: 'panel', id: 'deliveries' }, h('h2', {}, 'Destination deliveries'), deliveries),
      section('Request as received', ...request),
    ];
  }

  function headersTable(headers) {
    if (!headers || !headers.length) return h('p', { class: 'muted' }, 'no headers');
    return h('table', { class: 'headers' }, h('tbody', {}, headers.map(([k, v]) =>
      h('tr', {}, h('th', { scope: 'row' }, k), h('td', { class: v === '[redacted]' ? 'muted' : '' }, v)))));
  }

  /** Deploys, newest first: the published one marked, a Publish button (after a confirmation)
   * on the others — publishing an older one is a rollback. */
  function deploysView(main) {
    main.append(h('h1', {}, 'Deploys'));
    const box = h('div', { id: 'deploys' });
    main.append(box);
    const show = renderer(box);
    const p = poller(async () => {
      let list;
      try {
        list = await api('/.fnhost/deploys');
      } catch (e) {
        if (e.status === 404) {
          show(null, () => empty('deploys are off: set server.admin_token or server.deploy_token'));
          return;
        }
        throw e;
      }
      show(list, (l) => (l.length ? table('list', ['Deploy', 'Created', 'Message', 'Functions', 'Size', ''], l.map(deployRow)) : empty(emptyMessage('deploys'))));
    }, POLL_MS);

    function deployRow(d) {
      const action = d.published
        ? h('span', { class: 'state state-succeeded' }, 'published')
        : h('button', { type: 'button', 'data-publish': d.id, onclick: () => publish(d) }, 'Publish');
      return h('tr', { 'data-deploy': d.id, 'data-published': String(d.published) },
        td('Deploy', h('code', {}, d.id)), td('Created', timeEl(d.created_at), ' ', h('span', { class: 'muted' }, d.author || '')),
        td('Message', d.message || h('span', { class: 'muted' }, '–')), td('Functions', d.functions.join(', ')),
        td('Size', formatBytes(d.size)), td('', action));
    }

    async function publish(d) {
      const question = `Publish deploy ${d.id} on every node? Requests and attempts under way finish on the version they started with.`;
      if (!window.confirm(question)) return;
      try {
        await api(`/.fnhost/deploys/${encodeURIComponent(d.id)}/publish`, { method: 'POST' });
        setBanner('');
      } catch (e) {
        if (e.status !== 401) setBanner(`Publish refused: ${e.message}`);
      }
      p.now();
    }
    return p;
  }

  function logsView(main, route) {
    main.append(h('h1', {}, 'Logs'));
    const fnSelect = h('select', { id: 'tail-function', 'aria-label': 'function' }, h('option', { value: '' }, 'all functions'));
    fnSelect.addEventListener('change', () => go({ view: 'logs', function: fnSelect.value }));
    let paused = false;
    const pause = h('button', { type: 'button', id: 'tail-pause' }, 'Pause');
    pause.addEventListener('click', () => {
      paused = !paused;
      pause.textContent = paused ? 'Resume' : 'Pause';
    });
    main.append(h('div', { class: 'toolbar' }, h('label', {}, 'Function ', fnSelect), pause,
      h('span', { class: 'muted live' }, 'live tail of guest stdout and stderr')));
    const out = h('pre', { class: 'logs tail', id: 'tail' });
    const none = empty(emptyMessage('logs', { function: route.function }));
    main.append(none, out);
    let after = null;
    let lines = [];
    let listed = false;
    return poller(async () => {
      if (!listed) {
        const fns = await loadFunctions();
        fnSelect.append(...fns.map((f) => h('option', { value: f.name }, f.name)));
        fnSelect.value = route.function;
        listed = true;
      }
      if (paused) return;
      const q = new URLSearchParams();
      if (route.function) q.set('function', route.function);
      if (after !== null) q.set('after', String(after));
      const page = await api(`/.fnhost/logs?${q}`);
      after = page.next;
      if (!page.lines.length) return;
      const stick = out.scrollTop + out.clientHeight >= out.scrollHeight - 4;
      lines = appendCapped(lines, page.lines, TAIL_CAP);
      out.replaceChildren(...lines.map(logLine));
      none.hidden = true;
      if (stick) out.scrollTop = out.scrollHeight;
    }, POLL_MS);
  }

  function logLine(l) {
    const t = formatTime(l.at);
    return h('span', { class: `line ${l.stream}`, 'data-id': l.id },
      h('time', { datetime: l.at, title: t.title, class: 'muted' }, t.text.slice(11)), ' ',
      h('span', { class: 'fn' }, l.function), ' ',
      l.id ? h('a', { href: `#${routePath({ view: 'invocation', id: l.id })}`, class: 'muted' }, l.id.slice(0, 8)) : null,
      ' ', l.line, '\n');
  }

  // --- start ---

  function boot() {
    const frag = parseFragment(location.hash);
    if (frag.token) {
      sessionStorage.setItem(TOKEN_KEY, frag.token);
      // The token must not stay in the address bar, the history or a bookmark.
      history.replaceState(null, '', `${location.pathname}#${frag.path}`);
    }
    $('#login').addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const value = $('#token').value.trim();
      if (!value) return;
      sessionStorage.setItem(TOKEN_KEY, value);
      $('#token').value = '';
      try {
        await api('/.fnhost/functions');
      } catch (e) {
        if (e.status !== 401) {
          $('#login-message').textContent = e.status === 404
            ? 'The admin API is off: set [server] admin_token in fnhost.toml.'
            : `fnhost did not accept the token: ${e.message}`;
          $('#login-message').hidden = false;
          sessionStorage.removeItem(TOKEN_KEY);
        }
        return;
      }
      render();
    });
    $('#logout').addEventListener('click', () => {
      sessionStorage.removeItem(TOKEN_KEY);
      showLogin('Signed out.');
    });
    window.addEventListener('hashchange', () => {
      const f = parseFragment(location.hash);
      if (f.token) {
        sessionStorage.setItem(TOKEN_KEY, f.token);
        history.replaceState(null, '', `${location.pathname}#${f.path}`);
      }
      render();
    });
    render();
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', boot);
  else boot();
})();
