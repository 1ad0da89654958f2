/*
 * Streambed's decision worker: sends POST /decide off the page's main thread.
 *
 * The page posts {type: "init", shared} once (an Int32Array over a SharedArrayBuffer, two
 * slots per chunk: status at 2k, level at 2k + 1), then {type: "decide", chunk, url, body,
 * timeoutMs} for each chunk. The answer's level is written into the shared slots before the
 * worker reports back with a message, so that the page's synchronous ABR rule can wait for it
 * with a bounded spin (Atomics.load) while its own event loop is blocked.
 *
 * Status values: 0 not asked, 1 asked, 2 answered (level valid), 3 failed (no usable answer).
 * The body is sent as text/plain: a "simple" CORS request, so no preflight round trip.
 */
"use strict";

const ANSWERED = 2;
const FAILED = 3;

let shared = null;

function nowEpochMs() {
  return performance.timeOrigin + performance.now();
}

function settle(chunk, status, level) {
  if (shared === null || 2 * chunk + 1 >= shared.length) {
    return;
  }
  Atomics.store(shared, 2 * chunk + 1, level);
  Atomics.store(shared, 2 * chunk, status);
  Atomics.notify(shared, 2 * chunk);
}

async function decide(msg) {
  const sentAt = nowEpochMs();
  let answer = null;
  let error = null;
  let httpStatus = null;
  try {
    const response = await fetch(msg.url, {
      method: "POST",
      headers: { "Content-Type": "text/plain" },
      body: msg.body,
      cache: "no-store",
      signal: AbortSignal.timeout(msg.timeoutMs),
    });
    httpStatus = response.status;
    const text = await response.text();
    if (!response.ok) {
      error = `HTTP ${response.status}: ${text.slice(0, 200)}`;
    } else {
      try {
        answer = JSON.parse(text);
      } catch (exc) {
        error = `answer is not JSON: ${text.slice(0, 200)}`;
      }
    }
  } catch (exc) {
    if (exc && (exc.name === "TimeoutError" || exc.name === "AbortError")) {
      error = `no answer within ${msg.timeoutMs} ms`;
    } else {
      error = `${exc && exc.name ? exc.name : "Error"}: ${exc && exc.message ? exc.message : exc}`;
    }
  }
  const level = answer !== null ? answer.quality : undefined;
  if (error === null && !(Number.isInteger(level) && level >= 0 && level < msg.levels)) {
    error = `answer has no level in 0..${msg.levels - 1}: ${JSON.stringify(answer).slice(0, 200)}`;
  }
  if (error === null && answer.chunk_index !== undefined && answer.chunk_index !== msg.chunk) {
    error = `answer is for chunk ${answer.chunk_index}, asked for ${msg.chunk}`;
  }
  const answeredAt = nowEpochMs();
  if (error === null) {
    settle(msg.chunk, ANSWERED, level);
  } else {
    settle(msg.chunk, FAILED, -1);
  }
  self.postMessage({
    type: "answer",
    chunk: msg.chunk,
    ok: error === null,
    answer: error === null ? answer : null,
    error,
    httpStatus,
    sentEpochMs: sentAt,
    answeredEpochMs: answeredAt,
  });
}

self.onmessage = (event) => {
  const msg = event.data;
  if (msg.type === "init") {
    shared = msg.shared;
  } else if (msg.type === "decide") {
    decide(msg); // the page marked the slot PENDING before posting
  }
};
