'use strict';

// Starts the hookd binary that `cargo build` left in target/debug on a free
// port of 127.0.0.1, with a temporary data directory, and stops it by PID.

const { spawn } = require('node:child_process');
const fs = require('node:fs');
const http = require('node:http');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');

const REPOSITORY = path.resolve(__dirname, '..', '..', '..', '..');
const BINARY =
  process.env.HOOKD_BINARY || path.join(REPOSITORY, 'target', 'debug', 'hookd');

/** How long hookd may take to start or to stop, in milliseconds. */
const START_TIMEOUT_MS = 30_000;
const STOP_TIMEOUT_MS = 10_000;

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Returns a TCP port on 127.0.0.1 that was free a moment ago. */
const freePort = () =>
  new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });

/**
 * Sends one request on its own connection, without keep-alive, and returns
 * its status and body text. The request is one options object because
 * zapier-platform-core replaces http.request with a function of
 * (options, callback) while an app runs.
 */
const send = (url, { method = 'GET', headers = {}, body } = {}) =>
  new Promise((resolve, reject) => {
    const { hostname, port, pathname, search } = new URL(url);
    const request = http.request(
      {
        hostname,
        port,
        path: `${pathname}${search}`,
        method,
        headers,
        agent: false,
      },
      (response) => {
        const chunks = [];
        response.on('data', (chunk) => chunks.push(chunk));
        response.on('end', () =>
          resolve({
            status: response.statusCode,
            text: Buffer.concat(chunks).toString('utf8'),
          }),
        );
        response.on('error', reject);
      },
    );
    request.on('error', reject);
    request.end(body);
  });

/** Tells whether GET /readyz returns 200. */
const isReady = async (baseUrl) => {
  try {
    const response = await send(`${baseUrl}/readyz`);
    return response.status === 200;
  } catch {
    return false;
  }
};

/**
 * Starts hookd and waits until it is ready. Returns its base URL, the first
 * user's API key (from admin.key) and a `stop` function.
 */
const startHookd = async () => {
  if (!fs.existsSync(BINARY)) {
    throw new Error(
      `${BINARY} does not exist; run \`cargo build\` in ${REPOSITORY} first.`,
    );
  }
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'hookd-zapier-'));
  const port = await freePort();
  const baseUrl = `http://127.0.0.1:${port}`;

  // Only the variables below configure this hookd.
  const environment = Object.fromEntries(
    Object.entries(process.env).filter(([name]) => !name.startsWith('HOOKD_')),
  );
  Object.assign(environment, {
    HOOKD_LISTEN: `127.0.0.1:${port}`,
    HOOKD_DATA_DIR: dataDir,
    HOOKD_DELIVERY__ALLOWED_NETWORKS: '["127.0.0.0/8"]',
    RUST_LOG: 'info',
  });
  const logPath = path.join(dataDir, 'hookd.log');
  const log = fs.openSync(logPath, 'w');
  const child = spawn(BINARY, ['serve'], {
    env: environment,
    stdio: ['ignore', log, log],
  });
  fs.closeSync(log);

  let exitCode = null;
  const kill = () => {
    if (exitCode === null) {
      process.kill(child.pid, 'SIGKILL');
    }
  };
  // Kills hookd and removes its data if the test process ends without
  // calling stop, for example when the runner's timeout cancels a test file.
  const cleanUpOnExit = () => {
    kill();
    fs.rmSync(dataDir, { recursive: true, force: true });
  };
  process.once('exit', cleanUpOnExit);
  const exited = new Promise((resolve) => {
    child.on('exit', (code, signal) => {
      exitCode = code === null ? signal : code;
      resolve();
    });
  });

  const stop = async () => {
    if (exitCode === null) {
      process.kill(child.pid, 'SIGTERM');
      const forceKill = setTimeout(kill, STOP_TIMEOUT_MS);
      await exited;
      clearTimeout(forceKill);
    }
    process.removeListener('exit', cleanUpOnExit);
    fs.rmSync(dataDir, { recursive: true, force: true });
  };

  const deadline = Date.now() + START_TIMEOUT_MS;
  while (!(await isReady(baseUrl))) {
    if (exitCode !== null || Date.now() > deadline) {
      const output = fs.readFileSync(logPath, 'utf8');
      await stop();
      throw new Error(
        `hookd did not become ready on ${baseUrl} (exit: ${exitCode}). Its log:\n${output}`,
      );
    }
    await sleep(50);
  }

  const adminKey = fs
    .readFileSync(path.join(dataDir, 'admin.key'), 'utf8')
    .trim();

  /** Sends a request to hookd as the first user; returns status and body. */
  const request = async (method, urlPath, body) => {
    const response = await send(`${baseUrl}${urlPath}`, {
      method,
      headers: { key: adminKey, domain: 'localhost' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    let parsed;
    try {
      parsed = JSON.parse(response.text);
    } catch {
      parsed = response.text;
    }
    return { status: response.status, body: parsed };
  };

  return { baseUrl, adminKey, pid: child.pid, request, stop };
};

module.exports = { startHookd };
