// Unit tests of the dashboard's pure view logic: `node --test host/ui/app.test.js`
// (run by tests/tests/e2e/dashboard.rs with TZ=Asia/Kolkata, so local time differs from UTC).
'use strict';

const test = require('node:test');
const assert = require('node:assert/strict');
const ui = require('./app.js');

test('durations read as a person would say them', () => {
  assert.equal(ui.formatDuration(null), '–');
  assert.equal(ui.formatDuration(undefined), '–');
  assert.equal(ui.formatDuration(0), '0 ms');
  assert.equal(ui.formatDuration(0.4), '0 ms');
  assert.equal(ui.formatDuration(212.6), '213 ms');
  assert.equal(ui.formatDuration(1000), '1 s');
  assert.equal(ui.formatDuration(1234), '1.23 s');
  assert.equal(ui.formatDuration(12345), '12.3 s');
  assert.equal(ui.formatDuration(60000), '1 min');
  assert.equal(ui.formatDuration(125000), '2 min 5 s');
  assert.equal(ui.formatDuration(900000), '15 min');
  assert.equal(ui.formatDuration(3600000), '1 h');
  assert.equal(ui.formatDuration(5400000), '1 h 30 min');
  assert.equal(ui.formatDuration(119600), '2 min');
  assert.equal(ui.formatDuration(3599700), '1 h');
  assert.equal(ui.formatDuration(5 * 3600000 - 100), '5 h');
});

test('sizes in binary units', () => {
  assert.equal(ui.formatBytes(1073741824), '1 GiB');
  assert.equal(ui.formatBytes(134217728), '128 MiB');
  assert.equal(ui.formatBytes(1536), '1.5 KiB');
  assert.equal(ui.formatBytes(12), '12 B');
  assert.equal(ui.formatBytes(null), '–');
});

test('times show local time with UTC for the hover', () => {
  assert.equal(process.env.TZ, 'Asia/Kolkata', 'run with TZ=Asia/Kolkata');
  const t = ui.formatTime('2026-12-01T06:14:02.123Z');
  assert.equal(t.text, '2026-12-01 11:44:02');
  assert.equal(t.title, '2026-12-01 06:14:02.123 UTC');
  assert.deepEqual(ui.formatTime(null), { text: '–', title: '' });
  assert.deepEqual(ui.formatTime('not a time'), { text: '–', title: '' });
  const now = Date.parse('2026-12-01T06:00:00Z');
  assert.equal(ui.relativeTime('2026-12-01T06:04:00Z', now), 'in 4 min');
  assert.equal(ui.relativeTime('2026-12-01T05:59:48Z', now), '12 s ago');
  assert.equal(ui.relativeTime('2026-12-01T06:00:00.300Z', now), 'now');
  assert.equal(ui.between('2026-12-01T06:00:00Z', '2026-12-01T06:00:01.5Z'), 1500);
  assert.equal(ui.between('2026-12-01T06:00:00Z', null), null);
});

test('a schedule makes a function scheduled', () => {
  assert.equal(ui.functionMode({ mode: 'background', schedule: '@daily' }), 'scheduled');
  assert.equal(ui.functionMode({ mode: 'sync', schedule: '*/5 * * * *' }), 'scheduled');
  assert.equal(ui.functionMode({ mode: 'background', schedule: null }), 'background');
  assert.equal(ui.functionMode({ mode: 'sync', schedule: null }), 'sync');
  assert.equal(ui.routesLine({ name: 'a', routes: [], methods: [] }), 'any method /.netlify/functions/a');
  assert.equal(ui.routesLine({ name: 'a', routes: ['/x/:id', '/y'], methods: ['GET', 'POST'] }), 'GET, POST /x/:id  /y');
});

test('each state allows the actions the API accepts', () => {
  assert.deepEqual(ui.actionsFor('dead'), ['replay']);
  assert.deepEqual(ui.actionsFor('queued'), ['cancel']);
  assert.deepEqual(ui.actionsFor('retrying'), ['run-now', 'cancel']);
  for (const s of ['running', 'succeeded', 'cancelled', 'expired']) assert.deepEqual(ui.actionsFor(s), []);
  for (const a of ['replay', 'cancel', 'run-now']) assert.ok(ui.ACTIONS[a].confirm.endsWith('?'));
});

test('a scheduled function can be paused or resumed, and run now', () => {
  assert.deepEqual(ui.scheduleActionsFor({ schedule: '@daily', paused: false }), ['pause', 'run']);
  assert.deepEqual(ui.scheduleActionsFor({ schedule: '@daily', paused: true }), ['resume', 'run']);
  assert.deepEqual(ui.scheduleActionsFor({ schedule: null }), []);
  for (const a of ['pause', 'resume', 'run']) assert.ok(ui.SCHEDULE_ACTIONS[a].confirm.endsWith('?'));
});

const base = {
  id: 'abc', function: 'f', attempts: 0, max_attempts: 3,
  created_at: '2026-12-01T06:00:00.000Z', started_at: null, finished_at: null,
  next_attempt_at: null, last_error: null, result: null,
};
const attempt = (n, start, end, outcome, error) =>
  ({ attempt: n, started_at: start, finished_at: end, duration_ms: null, outcome, error: error || null });
const states = (timeline) => timeline.map((e) => e.state);

test('timeline: queued, then succeeded at the first attempt', () => {
  assert.deepEqual(states(ui.buildTimeline({ ...base, state: 'queued' }, [])), ['queued']);
  const done = { ...base, state: 'succeeded', attempts: 1, started_at: 'T1', finished_at: 'T2' };
  const t = ui.buildTimeline(done, [attempt(1, 'T1', 'T2', 'succeeded')]);
  assert.deepEqual(states(t), ['queued', 'running', 'succeeded']);
  assert.deepEqual(t.map((e) => e.at), [base.created_at, 'T1', 'T2']);
});

test('timeline: failures retry, then the last one is dead with its error', () => {
  const dead = { ...base, state: 'dead', attempts: 2, max_attempts: 2, finished_at: 'T4', last_error: 'trap: boom' };
  const t = ui.buildTimeline(dead, [attempt(1, 'T1', 'T2', 'failed', 'trap: boom'), attempt(2, 'T3', 'T4', 'failed', 'trap: boom')]);
  assert.deepEqual(states(t), ['queued', 'running', 'retrying', 'running', 'dead']);
  assert.equal(t[2].note, 'attempt 1 failed: trap: boom');
  assert.equal(t[4].at, 'T4');
});

test('timeline: a replay starts the attempts again after a dead end', () => {
  const dead = { ...base, state: 'dead', attempts: 2, max_attempts: 2, finished_at: 'T8', last_error: 'x' };
  const t = ui.buildTimeline(dead, [
    attempt(1, 'T1', 'T2', 'failed', 'x'), attempt(2, 'T3', 'T4', 'failed', 'x'),
    attempt(1, 'T5', 'T6', 'failed', 'x'), attempt(2, 'T7', 'T8', 'failed', 'x'),
  ]);
  assert.deepEqual(states(t), ['queued', 'running', 'retrying', 'running', 'dead', 'queued', 'running', 'retrying', 'running', 'dead']);
  assert.equal(t[4].at, 'T4');
  assert.deepEqual(t[5], { state: 'queued', at: null, note: 'replayed' });
  const again = { ...base, state: 'running', attempts: 1, started_at: 'T5' };
  const r = ui.buildTimeline(again, [attempt(1, 'T1', 'T2', 'failed', 'x'), attempt(1, 'T5', null, null)]);
  assert.deepEqual(states(r), ['queued', 'running', 'dead', 'queued', 'running']);
});

test('timeline: a waiting retry shows when the next attempt runs', () => {
  const waiting = { ...base, state: 'retrying', attempts: 1, next_attempt_at: 'T9' };
  const t = ui.buildTimeline(waiting, [attempt(1, 'T1', 'T2', 'failed', 'timeout')]);
  assert.deepEqual(states(t), ['queued', 'running', 'retrying']);
  assert.equal(t[2].next, 'T9');
  assert.match(t[2].note, /^attempt 1 failed: timeout; next attempt scheduled$/);
});

test('timeline: running, replayed, cancelled and dead without attempts', () => {
  const running = { ...base, state: 'running', attempts: 1, started_at: 'T1' };
  assert.deepEqual(states(ui.buildTimeline(running, [attempt(1, 'T1', null, null)])), ['queued', 'running']);
  // Running before its attempt is recorded.
  assert.deepEqual(states(ui.buildTimeline(running, [])), ['queued', 'running']);
  // Replayed: dead, then queued again.
  const replayed = { ...base, state: 'queued', attempts: 1 };
  const t = ui.buildTimeline(replayed, [attempt(1, 'T1', 'T2', 'failed', 'x')]);
  assert.deepEqual(states(t), ['queued', 'running', 'retrying', 'queued']);
  assert.equal(t[3].note, 'waiting for a worker');
  const cancelled = { ...base, state: 'cancelled', finished_at: 'T5' };
  const c = ui.buildTimeline(cancelled, []);
  assert.deepEqual(states(c), ['queued', 'cancelled']);
  assert.equal(c[1].at, 'T5');
  const interrupted = { ...base, state: 'dead', finished_at: 'T6', last_error: 'interrupted 3 times' };
  const d = ui.buildTimeline(interrupted, []);
  assert.deepEqual(states(d), ['queued', 'dead']);
  assert.equal(d[1].note, 'interrupted 3 times');
});

test('timeline: an invocation claimed past its event age expired without running', () => {
  const expired = { ...base, state: 'expired', attempts: 1, finished_at: 'T2', last_error: 'not run: waited 3s' };
  const t = ui.buildTimeline(expired, [attempt(1, 'T1', 'T2', 'expired', 'not run: waited 3s')]);
  assert.deepEqual(states(t), ['queued', 'expired']);
  assert.equal(t[1].note, 'not run: waited 3s');
  assert.equal(t[1].at, 'T2');
});

test('the token comes from the fragment and never stays in the route', () => {
  assert.deepEqual(ui.parseFragment('#token=s3cret'), { token: 's3cret', path: '/functions' });
  assert.deepEqual(ui.parseFragment('#token=a%2Bb&view=/invocations/x1'), { token: 'a+b', path: '/invocations/x1' });
  assert.deepEqual(ui.parseFragment('#/logs?function=f'), { token: null, path: '/logs?function=f' });
  assert.deepEqual(ui.parseFragment(''), { token: null, path: '/functions' });
  assert.deepEqual(ui.parseFragment('#'), { token: null, path: '/functions' });
  assert.deepEqual(ui.parseFragment('#token=t&view=javascript:x'), { token: 't', path: '/functions' });
});

test('routes round-trip through the fragment', () => {
  const routes = [
    { view: 'functions' },
    { view: 'invocations', function: '', state: '' },
    { view: 'invocations', function: 'x-background', state: 'dead' },
    { view: 'invocation', id: '0123abcd' },
    { view: 'logs', function: 'hello' },
    { view: 'logs', function: '' },
    { view: 'deploys' },
  ];
  for (const r of routes) assert.deepEqual(ui.parseRoute(ui.routePath(r)), r);
  assert.equal(ui.routePath({ view: 'invocations', function: 'a b', state: '' }), '/invocations?function=a+b');
  assert.deepEqual(ui.parseRoute('/invocations?state=bogus'), { view: 'invocations', function: '', state: '' });
  assert.deepEqual(ui.parseRoute('/nowhere'), { view: 'functions' });
  assert.equal(ui.invocationsUrl({ function: 'f', state: 'dead' }), '/.fnhost/invocations?function=f&state=dead&limit=100');
  assert.equal(ui.invocationsUrl({ function: '', state: '' }, 20), '/.fnhost/invocations?limit=20');
});

test('empty views say what to do', () => {
  assert.match(ui.emptyMessage('invocations', { backgroundCount: 0 }), /no background functions yet: name one `\*-background` or set `background = true`/);
  assert.match(ui.emptyMessage('invocations', { backgroundCount: 2 }), /POST to \/\.netlify\/functions\/NAME/);
  assert.match(ui.emptyMessage('invocations', { backgroundCount: 2, filtered: true }), /clear them/);
  assert.match(ui.emptyMessage('functions'), /NAME\.wasm/);
  assert.match(ui.emptyMessage('logs', { function: 'f' }), /^no output from f yet/);
});

test('the live tail keeps the newest lines; new rows are found', () => {
  assert.deepEqual(ui.appendCapped([1, 2, 3], [4, 5], 4), [2, 3, 4, 5]);
  assert.deepEqual(ui.appendCapped([], [1], 4), [1]);
  assert.deepEqual(ui.newIds([{ id: 'a' }], [{ id: 'b' }, { id: 'a' }]), ['b']);
});

test('a run that slept or waited shows as such, and the invocation can be cancelled meanwhile', () => {
  const status = {
    state: 'sleeping', created_at: '2026-12-04T07:00:00.000Z', attempts: 0, max_attempts: 3,
    next_attempt_at: '2026-12-11T07:00:01.000Z',
  };
  const attempts = [
    { attempt: 1, started_at: '2026-12-04T07:00:00.100Z', finished_at: '2026-12-04T07:00:00.200Z', outcome: 'waiting', error: 'waiting for event "order.shipped" with key "o-1" until 2026-12-18T07:00:00.100Z (step "shipped")' },
    { attempt: 1, started_at: '2026-12-04T07:00:05.000Z', finished_at: '2026-12-04T07:00:05.100Z', outcome: 'sleeping', error: 'sleeping until 2026-12-11T07:00:01.000Z (step "settle")' },
  ];
  const t = ui.buildTimeline(status, attempts);
  assert.deepEqual(t.map((e) => e.state), ['queued', 'running', 'waiting', 'running', 'sleeping']);
  assert.match(t[2].note, /order\.shipped/);
  assert.equal(t[4].next, '2026-12-11T07:00:01.000Z');
  assert.deepEqual(ui.actionsFor('sleeping'), ['cancel']);
  assert.deepEqual(ui.actionsFor('waiting'), ['cancel']);
  assert.ok(ui.STATES.includes('waiting'));
});
