'use strict';

// Limits the test process to loopback connections. Every TCP connection in
// Node.js, node-fetch's included, goes through net.Socket#connect, so a
// connection to any other host (a Zapier service, say) fails at once
// instead of leaving the machine.

const net = require('node:net');

// Variables that would make zapier-platform-core send logs or RPC calls to
// Zapier's servers.
const ZAPIER_SERVICE_VARIABLES = [
  'LOGGING_TOKEN',
  'LOGGING_ENDPOINT',
  'LOGGING_API_KEY',
  'ZAPIER_DEPLOY_KEY',
  'ZAPIER_BASE_ENDPOINT',
];

const isLoopback = (host) =>
  host === 'localhost' ||
  host === '::1' ||
  host === '[::1]' ||
  /^127\.\d+\.\d+\.\d+$/.test(host);

/** Returns the host that the arguments of Socket#connect name, if any. */
const hostOf = (args) => {
  const first = Array.isArray(args[0]) ? args[0][0] : args[0];
  if (first && typeof first === 'object') {
    return first.path ? null : first.host || 'localhost';
  }
  if (typeof first === 'number' || /^\d+$/.test(String(first))) {
    return typeof args[1] === 'string' ? args[1] : 'localhost';
  }
  // A string that is not a port is a Unix socket path.
  return null;
};

const install = () => {
  for (const name of ZAPIER_SERVICE_VARIABLES) {
    delete process.env[name];
  }
  if (net.Socket.prototype.connect.loopbackOnly) {
    return;
  }
  const connect = net.Socket.prototype.connect;
  const guarded = function (...args) {
    const host = hostOf(args);
    if (host !== null && !isLoopback(host)) {
      throw new Error(
        `The tests connect only to loopback addresses; a connection to ${host} was blocked.`,
      );
    }
    return connect.apply(this, args);
  };
  guarded.loopbackOnly = true;
  net.Socket.prototype.connect = guarded;
};

install();

module.exports = { isLoopback };
