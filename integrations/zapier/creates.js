'use strict';

// Actions: create a resource of each kind with POST /v2/<kind>, and mark a
// task or subtask as completed with PATCH /v2/<kind>/{id}. hookd fires the
// matching event for the connected user's subscriptions.

const { baseUrl } = require('./lib/hookd');
const { KINDS, sampleOf } = require('./lib/resources');

const DESCRIPTION_FIELD = {
  key: 'description',
  label: 'Description',
  type: 'text',
  required: false,
};

/**
 * Converts a date and time to the UTC form that hookd requires, such as
 * `2026-12-04T10:00:00Z`. Zapier passes ISO 8601 text, possibly with an
 * offset like `-05:00`.
 */
const toUtc = (z, value, label) => {
  const time = new Date(value);
  if (Number.isNaN(time.getTime())) {
    throw new z.errors.Error(
      `${label} ${JSON.stringify(value)} is not a date and time; use one like 2026-12-04T10:00:00Z.`,
      'InvalidDateTime',
      400,
    );
  }
  return time.toISOString().replace(/\.000Z$/, 'Z');
};

/**
 * Creates a perform that POSTs the non-empty input fields as a new resource
 * and returns hookd's document.
 */
const createResource = (kind, inputFields) => async (z, bundle) => {
  const document = {};
  for (const field of inputFields) {
    const value = bundle.inputData[field.key];
    if (value === undefined || value === null || value === '') {
      continue;
    }
    document[field.key] =
      field.type === 'datetime' ? toUtc(z, value, field.label) : value;
  }
  const response = await z.request({
    url: `${baseUrl(z, bundle)}/v2/${kind}`,
    method: 'POST',
    body: document,
  });
  return response.data;
};

/** Creates a perform that PATCHes `{"completed": true}` onto a resource. */
const completeResource = (kind) => async (z, bundle) => {
  const id = String(bundle.inputData.id || '').trim();
  if (id === '') {
    throw new z.errors.Error(
      `No ${KINDS[kind].noun.toLowerCase()} id was given; choose one or map an ID field.`,
      'MissingId',
      400,
    );
  }
  const response = await z.request({
    url: `${baseUrl(z, bundle)}/v2/${kind}/${encodeURIComponent(id)}`,
    method: 'PATCH',
    body: { completed: true },
  });
  return response.data;
};

const createAction = ({ key, kind, label, description, inputFields }) => ({
  key,
  noun: KINDS[kind].noun,
  display: { label, description },
  operation: {
    inputFields,
    perform: createResource(kind, inputFields),
    outputFields: KINDS[kind].outputFields,
    sample: sampleOf(kind),
  },
});

const completeAction = ({ key, kind, label, description, dynamic }) => ({
  key,
  noun: KINDS[kind].noun,
  display: { label, description },
  operation: {
    inputFields: [
      {
        key: 'id',
        label: KINDS[kind].noun,
        required: true,
        dynamic,
        helpText: `The ${KINDS[kind].noun.toLowerCase()} to mark as completed. The list shows your 100 most recent ones; map an ID to choose another.`,
      },
    ],
    perform: completeResource(kind),
    outputFields: KINDS[kind].outputFields,
    sample: sampleOf(kind, { completed: true }),
  },
});

const ACTIONS = [
  createAction({
    key: 'create_project',
    kind: 'projects',
    label: 'Create Project',
    description: 'Creates a project.',
    inputFields: [
      { key: 'name', label: 'Name', required: true },
      DESCRIPTION_FIELD,
    ],
  }),
  createAction({
    key: 'create_task',
    kind: 'tasks',
    label: 'Create Task',
    description: 'Creates a task.',
    inputFields: [
      { key: 'name', label: 'Name', required: true },
      DESCRIPTION_FIELD,
    ],
  }),
  createAction({
    key: 'create_subtask',
    kind: 'subtasks',
    label: 'Create Subtask',
    description: 'Creates a subtask of a task.',
    inputFields: [
      {
        key: 'task_id',
        label: 'Task',
        required: true,
        dynamic: 'new_task.id.name',
        helpText:
          'The task that the subtask belongs to. The list shows your 100 most recent tasks; map an ID to choose another task of your domain.',
      },
      { key: 'name', label: 'Name', required: true },
      DESCRIPTION_FIELD,
    ],
  }),
  createAction({
    key: 'create_client',
    kind: 'clients',
    label: 'Create Client',
    description: 'Creates a client.',
    inputFields: [
      { key: 'name', label: 'Name', required: true },
      DESCRIPTION_FIELD,
    ],
  }),
  createAction({
    key: 'create_event',
    kind: 'events',
    label: 'Create Calendar Event',
    description: 'Creates a calendar event.',
    inputFields: [
      { key: 'title', label: 'Title', required: true },
      {
        key: 'start',
        label: 'Start',
        type: 'datetime',
        required: true,
        helpText: 'When the event starts. The app sends it to hookd in UTC.',
      },
      {
        key: 'end',
        label: 'End',
        type: 'datetime',
        required: false,
        helpText: 'When the event ends, in UTC like the start.',
      },
      DESCRIPTION_FIELD,
    ],
  }),
  completeAction({
    key: 'complete_task',
    kind: 'tasks',
    label: 'Complete Task',
    description: 'Marks a task as completed.',
    dynamic: 'new_task.id.name',
  }),
  completeAction({
    key: 'complete_subtask',
    kind: 'subtasks',
    label: 'Complete Subtask',
    description: 'Marks a subtask as completed.',
    dynamic: 'new_subtask.id.name',
  }),
];

module.exports = Object.fromEntries(
  ACTIONS.map((action) => [action.key, action]),
);
