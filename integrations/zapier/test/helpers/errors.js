'use strict';

const assert = require('node:assert/strict');

/**
 * Returns the sentence that a user sees for an error from the app.
 * z.errors.Error (AppError) carries JSON {"message", "code", "status"} as its
 * message; other errors carry the sentence itself.
 */
const userMessage = (error) => {
  try {
    const parsed = JSON.parse(error.message);
    if (parsed && typeof parsed.message === 'string') {
      return parsed.message;
    }
  } catch {
    // Not JSON, so the message is the sentence.
  }
  return error.message;
};

/** Asserts that `promise` rejects with a user message matching `pattern`. */
const rejectsWithMessage = (promise, pattern, description) =>
  assert.rejects(promise, (error) => {
    assert.match(userMessage(error), pattern, description);
    return true;
  });

module.exports = { rejectsWithMessage, userMessage };
