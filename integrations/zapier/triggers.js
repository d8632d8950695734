'use strict';

// One REST Hook trigger per hookd event. Turning a Zap on subscribes the
// Zap's URL to the event with POST /v2/hooks; hookd then POSTs
// {"resource_url": "..."} to that URL for each of the connected user's
// actions, and the trigger fetches the resource from there.

const {
  baseUrl,
  resourceUrlFrom,
  throwForHookdStatus,
} = require('./lib/hookd');
const { KINDS, sampleOf } = require('./lib/resources');

/** Resources that performList returns for a sample in the Zap editor. */
const SAMPLE_LIMIT = 10;
/** Resources that performList returns to fill a dropdown; hookd's maximum. */
const DROPDOWN_LIMIT = 100;

const DEFINITIONS = [
  {
    event: 'new_project',
    kind: 'projects',
    label: 'New Project',
    description: 'Triggers when you create a project.',
  },
  {
    event: 'new_task',
    kind: 'tasks',
    label: 'New Task',
    description: 'Triggers when you create a task.',
  },
  {
    event: 'completed_task',
    kind: 'tasks',
    completed: true,
    label: 'Completed Task',
    description: 'Triggers when you mark a task as completed.',
  },
  {
    event: 'new_subtask',
    kind: 'subtasks',
    label: 'New Subtask',
    description: 'Triggers when you create a subtask.',
  },
  {
    event: 'completed_subtask',
    kind: 'subtasks',
    completed: true,
    label: 'Completed Subtask',
    description: 'Triggers when you mark a subtask as completed.',
  },
  {
    event: 'new_client',
    kind: 'clients',
    label: 'New Client',
    description: 'Triggers when you create a client.',
  },
  {
    event: 'new_event',
    kind: 'events',
    label: 'New Calendar Event',
    description: 'Triggers when you create a calendar event.',
  },
];

/**
 * Returns the caller's active subscription of `event` to `targetUrl`, or
 * undefined. hookd allows one active subscription per target URL.
 */
const findSubscription = async (z, base, targetUrl, event) => {
  const response = await z.request({ url: `${base}/v2/hooks` });
  const hooks = (response.data && response.data.hooks) || [];
  return hooks.find(
    (hook) => hook.target_url === targetUrl && hook.event === event,
  );
};

/**
 * Creates performSubscribe for an event. A 409 means that the target URL
 * already has an active subscription. When that subscription is the
 * caller's and of this event, it is returned, so that a repeated subscribe
 * (for example after a timeout) does not fail.
 */
const subscribe = (event) => async (z, bundle) => {
  const base = baseUrl(z, bundle);
  const response = await z.request({
    url: `${base}/v2/hooks`,
    method: 'POST',
    body: { target_url: bundle.targetUrl, event },
    skipThrowForStatus: true,
  });
  if (response.status === 409) {
    const existing = await findSubscription(z, base, bundle.targetUrl, event);
    if (existing) {
      return existing;
    }
  }
  throwForHookdStatus(z, response);
  return response.data;
};

/**
 * Removes the subscription that performSubscribe created. A 404 means that
 * hookd removed it already, for example because the Zap's URL answered 410
 * or the user's last API key was revoked, so the Zap can still be turned off.
 */
const unsubscribe = async (z, bundle) => {
  const id = bundle.subscribeData && bundle.subscribeData.id;
  if (typeof id !== 'string' || id === '') {
    throw new z.errors.Error(
      'The subscription data has no id, so there is no hookd subscription to remove.',
      'MissingSubscriptionId',
      400,
    );
  }
  const response = await z.request({
    url: `${baseUrl(z, bundle)}/v2/hooks/${encodeURIComponent(id)}`,
    method: 'DELETE',
    skipThrowForStatus: true,
  });
  if (response.status === 404) {
    return { id, removed: true, already_removed: true };
  }
  throwForHookdStatus(z, response);
  return response.data;
};

/**
 * Creates perform: fetches the resource that a notification names.
 * NOTE: the notification's webhook-signature header is not verified, so a
 * request to the Zap's URL can run the Zap for any resource of the
 * connected hookd. resourceUrlFrom keeps the request on that hookd.
 */
const fetchNotified = (kind) => async (z, bundle) => {
  const response = await z.request({
    url: resourceUrlFrom(z, bundle, kind),
  });
  return [response.data];
};

/**
 * Creates performList: the caller's most recent resources of a kind, newest
 * first by creation time. The completed_* triggers list completed ones only.
 */
const listRecent = (kind, completed) => async (z, bundle) => {
  const fillingDropdown = Boolean(
    bundle.meta && bundle.meta.isFillingDynamicDropdown,
  );
  const params = { limit: fillingDropdown ? DROPDOWN_LIMIT : SAMPLE_LIMIT };
  if (completed) {
    params.completed = 'true';
  }
  const response = await z.request({
    url: `${baseUrl(z, bundle)}/v2/${kind}`,
    params,
  });
  const list = response.data && response.data.data;
  if (!Array.isArray(list)) {
    throw new z.errors.Error(
      `GET ${response.request.url} returned no {"data": [...]} list; check that hookd is up to date.`,
      'UnexpectedList',
      response.status,
    );
  }
  return list;
};

const trigger = ({ event, kind, completed, label, description }) => ({
  key: event,
  noun: KINDS[kind].noun,
  display: { label, description },
  operation: {
    type: 'hook',
    performSubscribe: subscribe(event),
    performUnsubscribe: unsubscribe,
    perform: fetchNotified(kind),
    performList: listRecent(kind, completed),
    outputFields: KINDS[kind].outputFields,
    sample: completed ? sampleOf(kind, { completed: true }) : sampleOf(kind),
  },
});

module.exports = Object.fromEntries(
  DEFINITIONS.map((definition) => [definition.event, trigger(definition)]),
);
