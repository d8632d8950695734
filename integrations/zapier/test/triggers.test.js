'use strict';

// The seven REST Hook triggers against a running hookd, with a loopback
// receiver in place of Zapier's hook URLs. Each trigger subscribes, the
// matching action fires the event, the receiver gets the notification,
// perform fetches the resource, performList lists samples, and the
// trigger unsubscribes.

require('./helpers/loopback-only');

const assert = require('node:assert/strict');
const { after, before, test } = require('node:test');

const zapier = require('zapier-platform-core');

const App = require('../index');
const { rejectsWithMessage } = require('./helpers/errors');
const { startHookd } = require('./helpers/hookd-server');
const { startReceiver } = require('./helpers/receiver');

const appTester = zapier.createAppTester(App);

let hookd;
let receiver;

before(async () => {
  hookd = await startHookd();
  receiver = await startReceiver();
});

after(async () => {
  await receiver?.close();
  await hookd?.stop();
});

const authData = () => ({
  base_url: hookd.baseUrl,
  key: hookd.adminKey,
  domain: 'localhost',
});

/** Runs an action's perform with the connection and `inputData`. */
const act = (key, inputData) =>
  appTester(App.creates[key].operation.perform, {
    authData: authData(),
    inputData,
  });

const operationOf = (event) => App.triggers[event].operation;

/**
 * One case per trigger: `prepare` creates what the event needs, `fire` runs
 * the action that fires the event and returns the resource it changed.
 */
const CASES = [
  {
    event: 'new_project',
    kind: 'projects',
    fire: () => act('create_project', { name: 'Website relaunch' }),
  },
  {
    event: 'new_task',
    kind: 'tasks',
    fire: () => act('create_task', { name: 'Write the brief' }),
  },
  {
    event: 'completed_task',
    kind: 'tasks',
    prepare: () => act('create_task', { name: 'Book the venue' }),
    fire: (task) => act('complete_task', { id: task.id }),
  },
  {
    event: 'new_subtask',
    kind: 'subtasks',
    prepare: () => act('create_task', { name: 'Gather quotes' }),
    fire: (task) =>
      act('create_subtask', { task_id: task.id, name: 'Call the printer' }),
  },
  {
    event: 'completed_subtask',
    kind: 'subtasks',
    prepare: async () => {
      const task = await act('create_task', { name: 'Plan the launch' });
      return act('create_subtask', { task_id: task.id, name: 'Pick a date' });
    },
    fire: (subtask) => act('complete_subtask', { id: subtask.id }),
  },
  {
    event: 'new_client',
    kind: 'clients',
    fire: () => act('create_client', { name: 'Acme Ltd' }),
  },
  {
    event: 'new_event',
    kind: 'events',
    fire: () =>
      act('create_event', {
        title: 'Kick-off',
        start: '2026-12-04T11:00:00+01:00',
      }),
  },
];

for (const { event, kind, prepare, fire } of CASES) {
  test(`${event} trigger end to end`, async () => {
    const operation = operationOf(event);
    const path = `/hooks/${event}`;
    const targetUrl = receiver.url(path);
    const prepared = prepare ? await prepare() : undefined;

    const subscription = await appTester(operation.performSubscribe, {
      authData: authData(),
      targetUrl,
    });
    assert.equal(subscription.event, event);
    assert.equal(subscription.target_url, targetUrl);
    assert.equal(subscription.active, true);

    const changed = await fire(prepared);
    const [notification] = await receiver.waitFor(path);
    assert.equal(notification.method, 'POST');
    assert.equal(notification.headers['x-hookd-event'], event);
    assert.equal(notification.headers['x-hookd-subscription'], subscription.id);
    const body = JSON.parse(notification.body);
    assert.equal(
      body.resource_url,
      `${hookd.baseUrl}/v2/${kind}/${changed.id}`,
    );

    const results = await appTester(operation.perform, {
      authData: authData(),
      cleanedRequest: body,
    });
    assert.deepEqual(results, [changed]);

    const samples = await appTester(operation.performList, {
      authData: authData(),
    });
    assert.ok(
      samples.some((sample) => sample.id === changed.id),
      `performList of ${event} lacks ${changed.id}: ${JSON.stringify(samples)}`,
    );
    if (event.startsWith('completed_')) {
      assert.ok(samples.every((sample) => sample.completed === true));
    }

    const removal = await appTester(operation.performUnsubscribe, {
      authData: authData(),
      subscribeData: subscription,
    });
    assert.deepEqual(removal, { id: subscription.id, removed: true });

    const removed = await hookd.request('GET', `/v2/hooks/${subscription.id}`);
    assert.equal(removed.status, 200);
    assert.equal(removed.body.active, false);
    assert.equal(removed.body.removed_reason, 'deleted');
    const deletedAgain = await hookd.request(
      'DELETE',
      `/v2/hooks/${subscription.id}`,
    );
    assert.equal(deletedAgain.status, 404);
    assert.equal(receiver.on(path).length, 1);
  });
}

test('perform rejects foreign resource URLs', async () => {
  const task = await act('create_task', { name: 'Checked task' });
  const base = hookd.baseUrl;
  const port = Number(new URL(base).port);
  const foreign = [
    `http://127.0.0.2:${port}/v2/tasks/${task.id}`,
    `http://127.0.0.1:${port + 1}/v2/tasks/${task.id}`,
    `http://127.0.0.1:${port}0/v2/tasks/${task.id}`,
    `https://127.0.0.1:${port}/v2/tasks/${task.id}`,
    `http://user@127.0.0.1:${port}/v2/tasks/${task.id}`,
    `${base}/v2/projects/${task.id}`,
    `${base}/v2/tasks/../hooks/${task.id}`,
    `${base}/v2/tasks/${task.id}/extra`,
    `${base}/v2/tasks/${task.id}?key=1`,
    `${base}/v2/tasks/`,
    `${base}/tasks/${task.id}`,
    'not a URL',
  ];
  for (const resourceUrl of foreign) {
    await rejectsWithMessage(
      appTester(operationOf('new_task').perform, {
        authData: authData(),
        cleanedRequest: { resource_url: resourceUrl },
      }),
      /is not a tasks URL of the connected hookd/,
      resourceUrl,
    );
  }

  for (const cleanedRequest of [{}, { resource_url: 42 }, 'text', null]) {
    await rejectsWithMessage(
      appTester(operationOf('new_task').perform, {
        authData: authData(),
        cleanedRequest,
      }),
      /The notification has no resource_url/,
      JSON.stringify(cleanedRequest),
    );
  }
});

test('perform accepts an upper-case scheme', async () => {
  const task = await act('create_task', { name: 'Spelled differently' });
  const { port } = new URL(hookd.baseUrl);
  const results = await appTester(operationOf('new_task').perform, {
    authData: authData(),
    cleanedRequest: {
      resource_url: `HTTP://127.0.0.1:${port}/v2/tasks/${task.id}`,
    },
  });
  assert.deepEqual(results, [task]);
});

test('subscribe again returns the same subscription', async () => {
  const targetUrl = receiver.url('/hooks/repeated');
  const bundle = { authData: authData(), targetUrl };
  const first = await appTester(
    operationOf('new_client').performSubscribe,
    bundle,
  );
  const second = await appTester(
    operationOf('new_client').performSubscribe,
    bundle,
  );
  assert.equal(second.id, first.id);

  // The URL is taken by a new_client subscription, so new_project cannot
  // use it.
  await rejectsWithMessage(
    appTester(operationOf('new_project').performSubscribe, bundle),
    /returned 409/,
  );

  await appTester(operationOf('new_client').performUnsubscribe, {
    authData: authData(),
    subscribeData: first,
  });
});

test('unsubscribe after hookd removed the subscription', async () => {
  const subscription = await appTester(
    operationOf('new_project').performSubscribe,
    { authData: authData(), targetUrl: receiver.url('/hooks/removed') },
  );
  const deleted = await hookd.request('DELETE', `/v2/hooks/${subscription.id}`);
  assert.equal(deleted.status, 200);

  const removal = await appTester(
    operationOf('new_project').performUnsubscribe,
    {
      authData: authData(),
      subscribeData: subscription,
    },
  );
  assert.deepEqual(removal, {
    id: subscription.id,
    removed: true,
    already_removed: true,
  });
});

test('unsubscribe needs the subscription id', async () => {
  await rejectsWithMessage(
    appTester(operationOf('new_project').performUnsubscribe, {
      authData: authData(),
      subscribeData: {},
    }),
    /has no id/,
  );
});

test('performList limits samples and dropdowns', async () => {
  const names = [];
  for (let number = 0; number < 12; number += 1) {
    const name = `Listed project ${number}`;
    await act('create_project', { name });
    names.push(name);
  }
  const newestFirst = [...names].reverse();

  const samples = await appTester(operationOf('new_project').performList, {
    authData: authData(),
  });
  assert.deepEqual(
    samples.map((project) => project.name),
    newestFirst.slice(0, 10),
  );

  const choices = await appTester(operationOf('new_project').performList, {
    authData: authData(),
    meta: { isFillingDynamicDropdown: true },
  });
  assert.deepEqual(
    choices.map((project) => project.name).slice(0, 12),
    newestFirst,
  );
});

test('completed triggers list completed resources only', async () => {
  const open = await act('create_task', { name: 'Still open' });
  const done = await act('create_task', { name: 'Done soon' });
  await act('complete_task', { id: done.id });

  const samples = await appTester(operationOf('completed_task').performList, {
    authData: authData(),
  });
  const ids = samples.map((task) => task.id);
  assert.ok(ids.includes(done.id));
  assert.ok(!ids.includes(open.id));

  const recent = await appTester(operationOf('new_task').performList, {
    authData: authData(),
  });
  assert.ok(recent.some((task) => task.id === open.id));
});
