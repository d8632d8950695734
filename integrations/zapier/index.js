'use strict';

// The Zapier app definition for hookd: a custom connection (hookd URL, API
// key, domain), seven REST Hook triggers and seven actions.

const zapier = require('zapier-platform-core');

const authentication = require('./authentication');
const creates = require('./creates');
const { addCredentials, explainErrors } = require('./lib/hookd');
const triggers = require('./triggers');

module.exports = {
  version: require('./package.json').version,
  platformVersion: zapier.version,
  authentication,
  beforeRequest: [addCredentials],
  afterResponse: [explainErrors],
  triggers,
  creates,
};
