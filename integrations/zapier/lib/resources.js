'use strict';

// The five hookd resource kinds: the path segment of their URLs, and the
// output fields and sample that the triggers and creates show in Zapier.
// Documents carry hookd's fields (id, created_by, created_at, updated_at)
// and every field their creator sent.

const COMMON_OUTPUT_FIELDS = [
  { key: 'id', label: 'ID' },
  { key: 'created_by', label: 'Created By' },
  { key: 'created_at', label: 'Created At', type: 'datetime' },
  { key: 'updated_at', label: 'Updated At', type: 'datetime' },
];

const COMMON_SAMPLE = {
  id: '4f0c1d2e3b4a59687f8e9dacbbcadef0',
  created_by: 'admin',
  created_at: '2026-12-04T10:00:00.000Z',
  updated_at: '2026-12-04T10:00:00.000Z',
};

const KINDS = {
  projects: {
    noun: 'Project',
    outputFields: [
      ...COMMON_OUTPUT_FIELDS,
      { key: 'name', label: 'Name' },
      { key: 'description', label: 'Description' },
    ],
    sample: { ...COMMON_SAMPLE, name: 'Website relaunch' },
  },
  tasks: {
    noun: 'Task',
    outputFields: [
      ...COMMON_OUTPUT_FIELDS,
      { key: 'name', label: 'Name' },
      { key: 'description', label: 'Description' },
      { key: 'completed', label: 'Completed', type: 'boolean' },
    ],
    sample: { ...COMMON_SAMPLE, name: 'Write the brief', completed: false },
  },
  subtasks: {
    noun: 'Subtask',
    outputFields: [
      ...COMMON_OUTPUT_FIELDS,
      { key: 'name', label: 'Name' },
      { key: 'task_id', label: 'Task ID' },
      { key: 'description', label: 'Description' },
      { key: 'completed', label: 'Completed', type: 'boolean' },
    ],
    sample: {
      ...COMMON_SAMPLE,
      name: 'Collect quotes',
      task_id: '9b1e2d3c4f5a60718293a4b5c6d7e8f9',
      completed: false,
    },
  },
  clients: {
    noun: 'Client',
    outputFields: [
      ...COMMON_OUTPUT_FIELDS,
      { key: 'name', label: 'Name' },
      { key: 'description', label: 'Description' },
    ],
    sample: { ...COMMON_SAMPLE, name: 'Acme Ltd' },
  },
  events: {
    noun: 'Calendar Event',
    outputFields: [
      ...COMMON_OUTPUT_FIELDS,
      { key: 'title', label: 'Title' },
      { key: 'start', label: 'Start', type: 'datetime' },
      { key: 'end', label: 'End', type: 'datetime' },
      { key: 'description', label: 'Description' },
    ],
    sample: {
      ...COMMON_SAMPLE,
      title: 'Kick-off',
      start: '2026-12-04T10:00:00Z',
    },
  },
};

/** Returns a sample of a kind, with `overrides` applied. */
const sampleOf = (kind, overrides = {}) => ({
  ...KINDS[kind].sample,
  ...overrides,
});

module.exports = { KINDS, sampleOf };
