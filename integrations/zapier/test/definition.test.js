'use strict';

// The app definition against zapier-platform-schema, checked offline by the
// `validate` command of zapier-platform-core's handler (the local part of
// `zapier validate`).

require('./helpers/loopback-only');

const assert = require('node:assert/strict');
const { test } = require('node:test');

const zapier = require('zapier-platform-core');

const App = require('../index');

const EVENTS = [
  'new_project',
  'new_task',
  'completed_task',
  'new_subtask',
  'completed_subtask',
  'new_client',
  'new_event',
];

const ACTIONS = [
  'create_project',
  'create_task',
  'create_subtask',
  'create_client',
  'create_event',
  'complete_task',
  'complete_subtask',
];

test('definition validates against the schema', async () => {
  const handler = zapier.createAppHandler(App);
  const response = await handler({ command: 'validate' });
  assert.deepEqual(response.results, []);
});

test('definition versions', () => {
  assert.equal(App.version, require('../package.json').version);
  assert.equal(App.platformVersion, zapier.version);
  assert.equal(
    require('../package.json').dependencies['zapier-platform-core'],
    zapier.version,
    'package.json pins zapier-platform-core exactly',
  );
});

test('one REST hook trigger per event', () => {
  assert.deepEqual(Object.keys(App.triggers), EVENTS);
  for (const event of EVENTS) {
    const trigger = App.triggers[event];
    assert.equal(trigger.key, event);
    assert.equal(trigger.operation.type, 'hook', event);
    for (const method of [
      'performSubscribe',
      'performUnsubscribe',
      'perform',
      'performList',
    ]) {
      assert.equal(
        typeof trigger.operation[method],
        'function',
        `${event}.${method}`,
      );
    }
  }
});

test('actions for creating and completing', () => {
  assert.deepEqual(Object.keys(App.creates), ACTIONS);
  for (const key of ACTIONS) {
    assert.equal(App.creates[key].key, key);
    assert.equal(typeof App.creates[key].operation.perform, 'function', key);
  }
});

test('custom authentication fields', () => {
  assert.equal(App.authentication.type, 'custom');
  const fields = App.authentication.fields.map((field) => field.key);
  assert.deepEqual(fields, ['base_url', 'key', 'domain']);
  const key = App.authentication.fields.find((field) => field.key === 'key');
  assert.equal(key.type, 'password');
});
