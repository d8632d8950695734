'use strict';

// An HTTP server on 127.0.0.1 in place of Zapier's hook URLs. It records
// every request and responds with 200.

const http = require('node:http');

const WAIT_TIMEOUT_MS = 30_000;

const startReceiver = () =>
  new Promise((resolve, reject) => {
    const received = [];
    const server = http.createServer((request, response) => {
      const chunks = [];
      request.on('data', (chunk) => chunks.push(chunk));
      request.on('end', () => {
        received.push({
          method: request.method,
          path: request.url,
          headers: request.headers,
          body: Buffer.concat(chunks).toString('utf8'),
        });
        response.writeHead(200, { 'content-type': 'application/json' });
        response.end('{"status": "ok"}');
      });
    });
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      const receiver = {
        received,
        url: (path) => `http://127.0.0.1:${port}${path}`,
        on: (path) => received.filter((request) => request.path === path),

        /** Waits until `count` requests have reached `path`; returns them. */
        waitFor: async (path, count = 1) => {
          const deadline = Date.now() + WAIT_TIMEOUT_MS;
          while (receiver.on(path).length < count) {
            if (Date.now() > deadline) {
              throw new Error(
                `timed out waiting for ${count} request(s) on ${path}; received: ${JSON.stringify(received)}`,
              );
            }
            await new Promise((done) => setTimeout(done, 20));
          }
          return receiver.on(path);
        },

        close: () =>
          new Promise((done) => {
            server.closeAllConnections();
            server.close(() => done());
          }),
      };
      resolve(receiver);
    });
  });

module.exports = { startReceiver };
