'use strict';

// The connection: the test on GET /v2/me, the checks on the hookd URL, and
// the middleware that sends the credentials to the connected hookd only.

require('./helpers/loopback-only');

const assert = require('node:assert/strict');
const http = require('node:http');
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

const authData = (overrides = {}) => ({
  base_url: hookd.baseUrl,
  key: hookd.adminKey,
  domain: 'localhost',
  ...overrides,
});

test('connection test passes', async () => {
  const me = await appTester(App.authentication.test, { authData: authData() });
  assert.deepEqual(me, { user: 'admin', domain: 'localhost' });
});

test('connection test accepts a trailing slash', async () => {
  const me = await appTester(App.authentication.test, {
    authData: authData({ base_url: `${hookd.baseUrl}/` }),
  });
  assert.equal(me.user, 'admin');
});

test('connection test fails with a bad key', async () => {
  const unknownKey = '0'.repeat(40);
  await assert.rejects(
    appTester(App.authentication.test, {
      authData: authData({ key: unknownKey }),
    }),
    (error) => {
      assert.equal(error.name, 'ExpiredAuthError');
      assert.match(error.message, /returned 401/);
      assert.match(error.message, /invalid API key or domain/);
      assert.doesNotMatch(error.message, new RegExp(unknownKey));
      return true;
    },
  );
});

test('connection test fails with a malformed key', async () => {
  await rejectsWithMessage(
    appTester(App.authentication.test, {
      authData: authData({ key: 'not-a-key' }),
    }),
    /40 lowercase hex characters/,
  );
});

test('connection test fails with another domain', async () => {
  await rejectsWithMessage(
    appTester(App.authentication.test, {
      authData: authData({ domain: 'other.example' }),
    }),
    /returned 401/,
  );
});

test('connection test rejects a base URL that is not hookd', async () => {
  await rejectsWithMessage(
    appTester(App.authentication.test, {
      authData: authData({ base_url: receiver.url('') }),
    }),
    /check that the hookd URL points at a hookd server/,
  );
});

test('base URL must use https off loopback', async () => {
  // Rejected before any request, so no connection is attempted.
  await rejectsWithMessage(
    appTester(App.authentication.test, {
      authData: authData({ base_url: 'http://hookd.example.com' }),
    }),
    /must start with https:\/\//,
  );
});

test('base URL must be a URL', async () => {
  for (const baseUrl of ['', 'hookd.example.com', 'ftp://127.0.0.1/']) {
    await rejectsWithMessage(
      appTester(App.authentication.test, {
        authData: authData({ base_url: baseUrl }),
      }),
      /hookd URL/,
      JSON.stringify(baseUrl),
    );
  }
  await rejectsWithMessage(
    appTester(App.authentication.test, {
      authData: authData({ base_url: `${hookd.baseUrl}/?x=1` }),
    }),
    /must not contain a user name, password, query or fragment/,
  );
});

test('credentials go to the connected hookd only', async () => {
  const probe = async (url, bundle) =>
    appTester(async (z) => {
      await z.request({ url, skipThrowForStatus: true });
    }, bundle);

  await probe(receiver.url('/elsewhere'), { authData: authData() });
  const [elsewhere] = await receiver.waitFor('/elsewhere');
  assert.equal(elsewhere.headers.key, undefined);
  assert.equal(elsewhere.headers.domain, undefined);

  // With the receiver as the connected server under /hookd, requests below
  // /hookd/ carry the credentials, and a longer path such as /hookdx does not.
  const bundle = { authData: authData({ base_url: receiver.url('/hookd') }) };
  await probe(receiver.url('/hookd/v2/probe'), bundle);
  await probe(receiver.url('/hookdx/v2/probe'), bundle);
  const [below] = await receiver.waitFor('/hookd/v2/probe');
  const [beside] = await receiver.waitFor('/hookdx/v2/probe');
  assert.equal(below.headers.key, hookd.adminKey);
  assert.equal(below.headers.domain, 'localhost');
  assert.equal(beside.headers.key, undefined);
  assert.equal(beside.headers.domain, undefined);
});

test('redirects are not followed', async () => {
  const target = receiver.url('/redirected');
  const redirector = http.createServer((request, response) => {
    response.writeHead(301, { location: target });
    response.end();
  });
  await new Promise((resolve) => redirector.listen(0, '127.0.0.1', resolve));
  const { port } = redirector.address();
  try {
    await rejectsWithMessage(
      appTester(App.authentication.test, {
        authData: authData({ base_url: `http://127.0.0.1:${port}` }),
      }),
      /GET http:\/\/127\.0\.0\.1:\d+\/v2\/me returned a redirect \(301\) to http:\/\/127\.0\.0\.1:\d+\/redirected/,
    );
    assert.equal(receiver.on('/redirected').length, 0);
  } finally {
    redirector.closeAllConnections();
    await new Promise((resolve) => redirector.close(resolve));
  }
});
