'use strict';

// Helpers shared by the authentication, triggers and creates: the hookd base
// URL from the connection, the request middleware that adds the credentials,
// and the check that a notification's resource URL belongs to that hookd.

// Hosts for which the base URL may use plain http, so that a hookd on the
// same machine can be tested. Anywhere else the API key must travel over TLS.
const LOOPBACK_HOSTS = new Set(['localhost', '[::1]']);

const isLoopbackHost = (hostname) =>
  LOOPBACK_HOSTS.has(hostname) || /^127\.\d+\.\d+\.\d+$/.test(hostname);

// hookd ids are 32 lowercase hex characters. This pattern also accepts any
// other id that is a single path segment.
const ID_PATTERN = /^[A-Za-z0-9_-]+$/;

/**
 * Parses the base URL that the user entered for the connection. Returns it
 * without a trailing slash, such as `https://hookd.example.com` or
 * `https://example.com/hookd`, or a sentence that describes the problem.
 */
const parseBaseUrl = (text) => {
  const trimmed = String(text || '').trim();
  let url;
  try {
    url = new URL(trimmed);
  } catch {
    return {
      problem: `The hookd URL ${JSON.stringify(trimmed)} is not a valid URL. Enter one like https://hookd.example.com.`,
    };
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') {
    return {
      problem: `The hookd URL must start with https://, not ${url.protocol}//.`,
    };
  }
  if (url.protocol === 'http:' && !isLoopbackHost(url.hostname)) {
    return {
      problem:
        'The hookd URL must start with https:// so that the API key is sent encrypted. ' +
        'Plain http:// is accepted only for localhost and 127.0.0.1.',
    };
  }
  if (url.username || url.password || url.search || url.hash) {
    return {
      problem:
        'The hookd URL must not contain a user name, password, query or fragment. ' +
        'Enter only the address, like https://hookd.example.com.',
    };
  }
  return { baseUrl: url.origin + url.pathname.replace(/\/+$/, '') };
};

/** Returns the connection's base URL, or throws an error the user can act on. */
const baseUrl = (z, bundle) => {
  const { baseUrl: parsed, problem } = parseBaseUrl(
    bundle.authData && bundle.authData.base_url,
  );
  if (problem) {
    throw new z.errors.Error(problem, 'InvalidBaseUrl', 400);
  }
  return parsed;
};

/** Tells whether `url` is the base URL or a path below it. */
const isUnderBase = (url, base) => url === base || url.startsWith(`${base}/`);

/**
 * Adds the `key` and `domain` headers to requests for the connected hookd
 * and to no request outside its URL. Redirects are not followed, because
 * node-fetch 2 copies these headers to the redirect's target.
 */
const addCredentials = (request, z, bundle) => {
  const authData = bundle.authData || {};
  const { baseUrl: base } = parseBaseUrl(authData.base_url);
  if (!base || !request.url || !isUnderBase(request.url, base)) {
    return request;
  }
  request.headers = request.headers || {};
  request.headers.key = String(authData.key || '').trim();
  request.headers.domain = String(authData.domain || '').trim();
  request.redirect = 'manual';
  return request;
};

/** Returns hookd's `{"error": "..."}` sentence, or the start of the body. */
const errorMessage = (response) => {
  if (response.data && typeof response.data.error === 'string') {
    return response.data.error;
  }
  const text = String(response.content || '').trim();
  return text.length > 200 ? `${text.slice(0, 200)}…` : text || '(empty body)';
};

/**
 * Throws an error that names the request and hookd's message when the
 * response status is not 2xx. A 401 becomes ExpiredAuthError, so that Zapier
 * marks the connection as expired and prompts the user to reconnect. hookd
 * returns 401 when the key is unknown or revoked, or when the domain does
 * not match.
 */
const throwForHookdStatus = (z, response) => {
  const { status } = response;
  if (status >= 200 && status < 300) {
    return;
  }
  const request = response.request || {};
  const requestText = `${request.method || 'GET'} ${request.url || response.url}`;
  const message = errorMessage(response);
  if (status === 401) {
    throw new z.errors.ExpiredAuthError(
      `hookd rejected the API key or domain (${requestText} returned 401: ${message}). ` +
        'Check the key and the domain in the connection.',
    );
  }
  if (status >= 300 && status < 400) {
    throw new z.errors.Error(
      `${requestText} returned a redirect (${status}) to ${response.headers.get('location')}. ` +
        'Enter the hookd URL that the redirect points to in the connection.',
      'Redirect',
      status,
    );
  }
  throw new z.errors.Error(
    `${requestText} returned ${status}: ${message}`,
    `Hookd${status}`,
    status,
  );
};

/**
 * Turns a failed response into an error with hookd's message, unless the
 * request was made with `skipThrowForStatus` and handles the status itself.
 */
const explainErrors = (response, z) => {
  if (!response.skipThrowForStatus) {
    throwForHookdStatus(z, response);
  }
  return response;
};

/**
 * Checks a notification body and returns the URL to fetch its resource from.
 * The resource URL must be `<base URL>/v2/<kind>/<id>`. A URL on another
 * host, port or path, or of another kind, is rejected. So a forged
 * notification cannot make the app send the API key elsewhere.
 */
const resourceUrlFrom = (z, bundle, kind) => {
  const base = baseUrl(z, bundle);
  const notification = bundle.cleanedRequest;
  const text =
    notification && typeof notification === 'object'
      ? notification.resource_url
      : undefined;
  if (typeof text !== 'string' || text === '') {
    throw new z.errors.Error(
      `The notification has no resource_url; hookd sends {"resource_url": "${base}/v2/${kind}/<id>"}. ` +
        `Received: ${JSON.stringify(notification).slice(0, 200)}`,
      'InvalidNotification',
      400,
    );
  }

  const prefix = `${base}/v2/${kind}/`;
  let url;
  try {
    url = new URL(text);
  } catch {
    url = null;
  }
  // Comparing the parsed form puts the host in lower case and removes a
  // default port, and resolves `..` segments before the prefix is checked.
  const normalised =
    url && url.search === '' && url.hash === '' ? url.href : '';
  const id = normalised.startsWith(prefix)
    ? normalised.slice(prefix.length)
    : '';
  if (!ID_PATTERN.test(id)) {
    throw new z.errors.Error(
      `The notification's resource_url ${JSON.stringify(text)} is not a ${kind} URL of the connected hookd; ` +
        `expected ${prefix}<id>. Check that the hookd URL in the connection is the one hookd uses in its ` +
        'notifications (its public_base_url).',
      'ForeignResourceUrl',
      400,
    );
  }
  return `${prefix}${id}`;
};

module.exports = {
  addCredentials,
  baseUrl,
  explainErrors,
  parseBaseUrl,
  resourceUrlFrom,
  throwForHookdStatus,
};
