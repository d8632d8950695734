'use strict';

const { baseUrl } = require('./lib/hookd');

/**
 * Checks the connection with GET /v2/me, which changes nothing. Returns the
 * user and domain that the key and domain authenticate.
 */
const test = async (z, bundle) => {
  const response = await z.request({ url: `${baseUrl(z, bundle)}/v2/me` });
  const me = response.data;
  if (!me || typeof me.user !== 'string' || typeof me.domain !== 'string') {
    throw new z.errors.Error(
      `GET ${response.request.url} returned ${response.status} without {"user", "domain"}; ` +
        'check that the hookd URL points at a hookd server.',
      'NotHookd',
      response.status,
    );
  }
  return me;
};

module.exports = {
  type: 'custom',
  fields: [
    {
      key: 'base_url',
      label: 'hookd URL',
      type: 'string',
      required: true,
      helpText:
        'The address of your hookd server, such as `https://hookd.example.com`: the same address that ' +
        'hookd puts at the start of the resource URLs in its notifications (its `public_base_url`).',
    },
    {
      key: 'key',
      label: 'API key',
      type: 'password',
      required: true,
      helpText:
        'An API key of your hookd user: 40 lowercase hex characters. Your hookd operator creates one with ' +
        '`hookd key add`.',
    },
    {
      key: 'domain',
      label: 'Domain',
      type: 'string',
      required: true,
      helpText:
        'The domain that your hookd user belongs to, such as `acme.example.com`.',
    },
  ],
  test,
  connectionLabel: '{{bundle.inputData.user}} ({{bundle.inputData.domain}})',
};
