'use strict';

// The actions against a running hookd: what they send, what they return, and
// the errors a user sees.

require('./helpers/loopback-only');

const assert = require('node:assert/strict');
const { after, before, test } = require('node:test');

const zapier = require('zapier-platform-core');

const App = require('../index');
const { rejectsWithMessage } = require('./helpers/errors');
const { startHookd } = require('./helpers/hookd-server');

const appTester = zapier.createAppTester(App);

let hookd;

before(async () => {
  hookd = await startHookd();
});

after(async () => {
  await hookd?.stop();
});

const act = (key, inputData) =>
  appTester(App.creates[key].operation.perform, {
    authData: {
      base_url: hookd.baseUrl,
      key: hookd.adminKey,
      domain: 'localhost',
    },
    inputData,
  });

test('create_project stores the document', async () => {
  const project = await act('create_project', {
    name: 'Website relaunch',
    description: 'New look, same content',
  });
  assert.equal(project.name, 'Website relaunch');
  assert.equal(project.description, 'New look, same content');
  assert.equal(project.created_by, 'admin');
  assert.match(project.id, /^[0-9a-f]{32}$/);

  const stored = await hookd.request('GET', `/v2/projects/${project.id}`);
  assert.equal(stored.status, 200);
  assert.deepEqual(stored.body, project);
});

test('empty optional fields are left out', async () => {
  const client = await act('create_client', {
    name: 'Acme Ltd',
    description: '',
  });
  assert.equal(client.name, 'Acme Ltd');
  assert.equal('description' in client, false);
});

test('create_event sends times in UTC', async () => {
  const event = await act('create_event', {
    title: 'Kick-off',
    start: '2026-12-04T11:00:00+01:00',
    end: '2026-12-04T12:30:00.250+01:00',
  });
  assert.equal(event.start, '2026-12-04T10:00:00Z');
  assert.equal(event.end, '2026-12-04T11:30:00.250Z');
});

test('create_event rejects an invalid time', async () => {
  await rejectsWithMessage(
    act('create_event', { title: 'Kick-off', start: 'next Tuesday-ish' }),
    /Start "next Tuesday-ish" is not a date and time/,
  );
});

test('create_task reports a missing name', async () => {
  await rejectsWithMessage(
    act('create_task', {}),
    /POST http:\/\/127\.0\.0\.1:\d+\/v2\/tasks returned 400: missing field `name`/,
  );
});

test('create_subtask needs an existing task', async () => {
  await rejectsWithMessage(
    act('create_subtask', { task_id: 'f'.repeat(32), name: 'Orphan' }),
    /returned 400: field `task_id`: task "f+" not found in this domain/,
  );

  const task = await act('create_task', { name: 'Parent' });
  const subtask = await act('create_subtask', {
    task_id: task.id,
    name: 'Child',
  });
  assert.equal(subtask.task_id, task.id);
});

test('complete_task marks the task completed', async () => {
  const task = await act('create_task', { name: 'Finish me' });
  assert.equal(task.completed, undefined);

  const completed = await act('complete_task', { id: task.id });
  assert.equal(completed.id, task.id);
  assert.equal(completed.completed, true);

  // Completing it again changes nothing and still succeeds.
  const again = await act('complete_task', { id: task.id });
  assert.equal(again.completed, true);
});

test('complete_subtask marks the subtask completed', async () => {
  const task = await act('create_task', { name: 'Parent of one' });
  const subtask = await act('create_subtask', {
    task_id: task.id,
    name: 'Only child',
  });
  const completed = await act('complete_subtask', { id: subtask.id });
  assert.equal(completed.completed, true);

  const parent = await hookd.request('GET', `/v2/tasks/${task.id}`);
  assert.equal(parent.body.completed, undefined);
});

test('complete_task reports an unknown id', async () => {
  await rejectsWithMessage(
    act('complete_task', { id: 'nope' }),
    /PATCH http:\/\/127\.0\.0\.1:\d+\/v2\/tasks\/nope returned 404: no task with id "nope"/,
  );
  await rejectsWithMessage(
    act('complete_task', { id: ' ' }),
    /No task id was given/,
  );
});

test('complete_task encodes the id in the path', async () => {
  await rejectsWithMessage(
    act('complete_task', { id: '../projects/x' }),
    /tasks\/\.\.%2Fprojects%2Fx returned 404/,
  );
});
