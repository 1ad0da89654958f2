/*
 * Streambed's remote-ABR rule for dash.js 5: every video segment's level is decided by the
 * Streambed decision service (POST {abr}/decide), the same request the headless player sends.
 *
 * dash.js asks its quality rules synchronously, once per segment, without telling them which
 * segment: the page tracks the index from dash.js's fragment events and calls
 * `decider.prefetch(k + 1, measured)` as soon as segment k has been downloaded. The request
 * goes out at once; by the time dash.js asks the rule for segment k + 1 (after appending k)
 * the answer has usually arrived. When it has not, the rule waits for it, at most until the
 * request's deadline (`timeoutMs` after it was sent):
 *
 *   - "worker" mode (the page is cross-origin isolated, so SharedArrayBuffer exists): a
 *     dedicated worker sends the request and writes the answer's level into shared memory;
 *     the rule spins on Atomics.load until the level is there or the deadline passes. The
 *     wait is bounded, and the service sees exactly one request per segment.
 *   - "xhr" mode (no SharedArrayBuffer): the prefetch is an ordinary fetch; a rule that finds
 *     it unanswered repeats it as a synchronous XMLHttpRequest with the same body (the service
 *     answers a repeated request from its cache without feeding its history twice). Browsers
 *     do not allow a timeout on a synchronous request from a page, so this wait is unbounded.
 *
 * Whatever goes wrong (service down, HTTP error, malformed answer, deadline passed), the rule
 * decides locally with BBA (reservoir 5 s, cushion 10 s: the headless player's and the
 * service's fallback) and the decision is marked as a fallback with the reason. The player
 * never stops because of the service.
 *
 * Exposes `StreambedABR` on the global object: `RemoteDecider`, `createRule`, `decideBody`,
 * `bbaLevel`. Every decision is reported through the `emit` callback given to the decider:
 * {type: "decide_sent"}, {type: "answer"} (the service's full answer, also a late one) and
 * {type: "decision"} (what the rule applied, with `source`: "prefetched" (ready when asked),
 * "waited" (the rule blocked until the prefetched answer arrived), "asked" (nothing was
 * prefetched: the rule sent the request and waited), "local" (fallback)).
 */
(function (global) {
  "use strict";

  const NONE = 0;
  const PENDING = 1;
  const ANSWERED = 2;
  const FAILED = 3;
  const MIN_DOWNLOAD_S = 1e-4; // the service refuses shorter downloads
  const RULE_NAME = "StreambedRemoteRule";

  /** BBA's level for a buffer level (Huang et al.; the service's `bba` and the player's). */
  function bbaLevel(bufferS, levels, reservoirS = 5.0, cushionS = 10.0) {
    if (bufferS < reservoirS) {
      return 0;
    }
    if (bufferS >= reservoirS + cushionS) {
      return levels - 1;
    }
    return Math.floor(((levels - 1) * (bufferS - reservoirS)) / cushionS);
  }

  /**
   * The POST /decide body for chunk `chunk`, as the headless player builds it
   * (player/decisions.py decide_body): `last` is what was measured for chunk - 1 or null.
   */
  function decideBody(opts, chunk, bufferS, last) {
    const body = {
      session_id: opts.sessionId,
      chunk_index: chunk,
      buffer_s: Math.max(bufferS, 0),
    };
    if (last) {
      body.last_quality = last.quality;
      body.last_chunk_bytes = Math.max(1, Math.round(last.bytes));
      body.last_chunk_download_s = Math.max(last.downloadS, MIN_DOWNLOAD_S);
      body.rebuffer_s = Math.max(last.rebufferS, 0);
    }
    if (opts.algorithm) {
      body.algorithm = opts.algorithm; // every time: a restarted service recreates the session
    }
    if (opts.video) {
      body.video = opts.video;
    }
    if (opts.params && Object.keys(opts.params).length) {
      body.params = opts.params;
    }
    return body;
  }

  function shortText(text) {
    text = String(text).replace(/\s+/g, " ").trim();
    return text.length <= 200 ? text : text.slice(0, 200) + "...";
  }

  /** Checks an answer's level; the level, or a string saying why it is unusable. */
  function checkAnswer(answer, chunk, levels) {
    if (answer === null || typeof answer !== "object") {
      return "answer is not a JSON object";
    }
    const level = answer.quality;
    if (!Number.isInteger(level)) {
      return shortText(`answer has no integer quality: ${JSON.stringify(answer)}`);
    }
    if (level < 0 || level >= levels) {
      return `quality ${level} outside the MPD's levels 0..${levels - 1}`;
    }
    if (answer.chunk_index !== undefined && answer.chunk_index !== chunk) {
      return `answer is for chunk ${answer.chunk_index}, asked for ${chunk}`;
    }
    return level;
  }

  class RemoteDecider {
    /**
     * opts: serviceUrl, sessionId, algorithm, video, params, timeoutMs, firstQuality, levels,
     * numChunks, clock (ms on the session clock), epochZeroMs (the session clock's zero as
     * epoch ms), workerUrl, emit(event), mode ("auto": worker when the page is cross-origin
     * isolated, else xhr; or "xhr").
     */
    constructor(opts) {
      this.opts = opts;
      this.url = opts.serviceUrl.replace(/\/+$/, "") + "/decide";
      this.levels = opts.levels;
      this.requests = new Map(); // chunk -> {body, text, sentMs, deadlineMs, answer, error}
      this.decisions = new Map(); // chunk -> the decision applied
      this.waiters = new Map(); // chunk -> resolve functions waiting for an answer message
      this.mode = "xhr";
      this.shared = null;
      this.worker = null;
      this.blockingWaits = 0;
      const slots = 2 * (Math.max(opts.numChunks, 1) + 1);
      const wanted = opts.mode || "auto";
      if (wanted === "xhr") {
        opts.emit({ type: "warning", message: "decision mode xhr asked for: no decision worker" });
      } else if (!(global.crossOriginIsolated && typeof SharedArrayBuffer !== "undefined")) {
        opts.emit({
          type: "warning",
          message: "the page is not cross-origin isolated (no SharedArrayBuffer): a decision " +
            "that has not arrived is waited for with a synchronous XMLHttpRequest, unbounded",
        });
      } else {
        try {
          this.shared = new Int32Array(new SharedArrayBuffer(4 * slots));
          this.worker = new Worker(opts.workerUrl);
          this.worker.onmessage = (event) => this._onAnswer(event.data);
          this.worker.onerror = (event) =>
            opts.emit({ type: "error", where: "decision worker", message: String(event.message) });
          this.worker.postMessage({ type: "init", shared: this.shared });
          this.mode = "worker";
        } catch (exc) {
          this.shared = null;
          this.worker = null;
          opts.emit({ type: "warning", message: `decision worker unavailable: ${exc}` });
        }
      }
    }

    _epochToClock(epochMs) {
      return epochMs - this.opts.epochZeroMs;
    }

    /**
     * Send chunk `chunk`'s request now (not waiting for the answer). `send` false only
     * registers it (xhr mode: the rule is about to send it synchronously itself).
     */
    prefetch(chunk, body, send = true) {
      if (chunk >= this.opts.numChunks || this.requests.has(chunk)) {
        return;
      }
      const text = JSON.stringify(body);
      const sentMs = this.opts.clock();
      const req = {
        body,
        text,
        sentMs,
        deadlineMs: sentMs + this.opts.timeoutMs,
        answer: null,
        error: null,
        answeredMs: null,
      };
      this.requests.set(chunk, req);
      this.opts.emit({ type: "decide_sent", chunk_index: chunk, t_ms: sentMs, body });
      if (!send) {
        return;
      }
      if (this.mode === "worker" && 2 * chunk + 1 < this.shared.length) {
        Atomics.store(this.shared, 2 * chunk, PENDING);
        this.worker.postMessage({
          type: "decide",
          chunk,
          url: this.url,
          body: text,
          timeoutMs: this.opts.timeoutMs,
          levels: this.levels,
        });
        return;
      }
      const controller = new AbortController();
      const timer = setTimeout(() => controller.abort(), this.opts.timeoutMs);
      fetch(this.url, {
        method: "POST",
        headers: { "Content-Type": "text/plain" },
        body: text,
        cache: "no-store",
        signal: controller.signal,
      })
        .then(async (response) => {
          const answerText = await response.text();
          if (!response.ok) {
            throw new Error(`HTTP ${response.status}: ${answerText.slice(0, 200)}`);
          }
          return JSON.parse(answerText);
        })
        .then(
          (answer) => this._onAnswer({ chunk, ok: true, answer, error: null }),
          (exc) =>
            this._onAnswer({
              chunk,
              ok: false,
              answer: null,
              error: exc.name === "AbortError" ? `no answer within ${this.opts.timeoutMs} ms` : String(exc),
            })
        )
        .finally(() => clearTimeout(timer));
    }

    _onAnswer(msg) {
      const req = this.requests.get(msg.chunk);
      const answeredMs =
        msg.answeredEpochMs !== undefined ? this._epochToClock(msg.answeredEpochMs) : this.opts.clock();
      let error = msg.error;
      if (req) {
        if (msg.ok) {
          const level = checkAnswer(msg.answer, msg.chunk, this.levels);
          if (typeof level === "string") {
            error = level;
          } else if (req.answer === null) {
            req.answer = msg.answer;
          }
        }
        if (error && req.answer === null && req.error === null) {
          req.error = error;
        }
        if (req.answeredMs === null) {
          req.answeredMs = answeredMs;
        }
      }
      const applied = this.decisions.get(msg.chunk);
      this.opts.emit({
        type: "answer",
        chunk_index: msg.chunk,
        ok: !error,
        answer: error ? null : msg.answer,
        error: error || null,
        t_ms: answeredMs,
        late: applied !== undefined && applied.source === "local",
      });
      const waiting = this.waiters.get(msg.chunk);
      if (waiting) {
        this.waiters.delete(msg.chunk);
        waiting.forEach((resolve) => resolve());
      }
    }

    /** Resolves once chunk `chunk` has an answer (or failed): for chunk 0, before dash.js runs. */
    whenAnswered(chunk) {
      const req = this.requests.get(chunk);
      if (!req || req.answer !== null || req.error !== null) {
        return Promise.resolve();
      }
      return new Promise((resolve) => {
        const list = this.waiters.get(chunk) || [];
        list.push(resolve);
        this.waiters.set(chunk, list);
        setTimeout(resolve, Math.max(0, req.deadlineMs - this.opts.clock()) + 50);
      });
    }

    /** Spin until the worker has settled `chunk` or its deadline passes; the status. */
    _spin(chunk, deadlineMs) {
      let status = Atomics.load(this.shared, 2 * chunk);
      while (status === PENDING && this.opts.clock() < deadlineMs) {
        status = Atomics.load(this.shared, 2 * chunk);
      }
      return status;
    }

    _syncRequest(req) {
      const xhr = new XMLHttpRequest();
      try {
        xhr.open("POST", this.url, false); // synchronous: no timeout allowed from a page
        xhr.setRequestHeader("Content-Type", "text/plain");
        xhr.send(req.text);
        if (xhr.status !== 200) {
          return shortText(`HTTP ${xhr.status}: ${xhr.responseText}`);
        }
        return JSON.parse(xhr.responseText);
      } catch (exc) {
        return shortText(`${exc.name || "Error"}: ${exc.message || exc}`);
      }
    }

    /**
     * The level of chunk `chunk`, now (called from the synchronous rule). `bodyNow()` builds
     * the request if none was prefetched; `bufferS` feeds the local fallback; `startup` marks
     * chunk 0's decision, taken before dash.js starts.
     */
    decide(chunk, bufferS, bodyNow, startup = false) {
      const known = this.decisions.get(chunk);
      if (known !== undefined) {
        known.calls += 1;
        return known;
      }
      const askedMs = this.opts.clock();
      let source = "prefetched";
      if (!this.requests.has(chunk)) {
        this.prefetch(chunk, bodyNow(), this.mode === "worker"); // nothing prefetched: ask now
        source = "asked";
      }
      const req = this.requests.get(chunk);
      let level = null;
      let reason = null;
      const settled = this.mode === "worker" ? Atomics.load(this.shared, 2 * chunk) : NONE;
      if (req.answer !== null) {
        level = req.answer.quality;
      } else if (req.error !== null) {
        reason = req.error;
      } else if (settled === ANSWERED) {
        level = Atomics.load(this.shared, 2 * chunk + 1); // its message is still queued
      } else if (settled === FAILED) {
        reason = "the decision request failed (see its answer event)";
      } else if (this.mode === "worker") {
        source = source === "asked" ? source : "waited";
        this.blockingWaits += 1;
        const status = this._spin(chunk, req.deadlineMs);
        if (status === ANSWERED) {
          level = Atomics.load(this.shared, 2 * chunk + 1);
        } else if (status === FAILED) {
          reason = "the decision request failed (see its answer event)";
        } else {
          reason = `no answer within ${this.opts.timeoutMs} ms`;
        }
      } else {
        source = source === "asked" ? source : "waited";
        this.blockingWaits += 1;
        const got = this._syncRequest(req);
        const checked = typeof got === "string" ? got : checkAnswer(got, chunk, this.levels);
        if (typeof checked === "string") {
          reason = checked;
        } else {
          level = checked;
          req.answer = got;
        }
      }
      if (level === null && req.answer !== null) {
        level = req.answer.quality; // arrived while we looked
        reason = null;
      }
      const fallback = level === null;
      if (fallback) {
        level =
          chunk === 0
            ? Math.min(Math.max(this.opts.firstQuality, 0), this.levels - 1)
            : bbaLevel(bufferS, this.levels);
        source = "local";
      } else if (startup) {
        source = "startup"; // asked before dash.js started, which the page awaited
      }
      const decision = {
        type: "decision",
        chunk_index: chunk,
        quality: level,
        fallback,
        reason,
        source,
        mode: this.mode,
        asked_ms: askedMs,
        applied_ms: this.opts.clock(),
        waited_ms: this.opts.clock() - askedMs,
        sent_ms: req.sentMs,
        buffer_s: bufferS,
        calls: 1,
      };
      this.decisions.set(chunk, decision);
      this.opts.emit(decision);
      return decision;
    }
  }

  /**
   * A dash.js 5 quality-switch rule class factory (for `player.addABRCustomRule(
   * "qualitySwitchRules", "StreambedRemoteRule", factory)`). hooks: nextChunk() (the index of
   * the segment dash.js is about to request, or null), bufferS(), bodyFor(chunk) and
   * emit(event).
   */
  function createRule(dashjs, decider, hooks) {
    function StreambedRemoteRuleClass() {
      const context = this.context;
      const SwitchRequest = dashjs.FactoryMaker.getClassFactoryByName("SwitchRequest");

      function levelsOf(rulesContext) {
        const mediaInfo = rulesContext.getMediaInfo();
        const reps = rulesContext.getAbrController().getPossibleVoRepresentations(mediaInfo, true);
        return reps.slice().sort((a, b) => a.bandwidth - b.bandwidth);
      }

      function getSwitchRequest(rulesContext) {
        const request = SwitchRequest(context).create();
        try {
          if (rulesContext.getMediaType() !== "video") {
            return request;
          }
          const chunk = hooks.nextChunk();
          if (chunk === null) {
            return request;
          }
          const reps = levelsOf(rulesContext);
          const bufferS = hooks.bufferS();
          const decision = decider.decide(chunk, bufferS, () => hooks.bodyFor(chunk, bufferS));
          const rep = reps[decision.quality];
          if (!rep) {
            hooks.emit({
              type: "error",
              where: RULE_NAME,
              message: `level ${decision.quality} has no representation (${reps.length} in the MPD)`,
            });
            return request;
          }
          request.representation = rep;
          request.reason = { rule: RULE_NAME, chunk, source: decision.source };
          request.priority = SwitchRequest.PRIORITY.STRONG;
        } catch (exc) {
          hooks.emit({ type: "error", where: RULE_NAME, message: `${exc}\n${exc.stack || ""}` });
        }
        return request;
      }

      return { getSwitchRequest, reset() {} };
    }
    StreambedRemoteRuleClass.__dashjs_factory_name = RULE_NAME;
    return dashjs.FactoryMaker.getClassFactory(StreambedRemoteRuleClass);
  }

  global.StreambedABR = {
    RULE_NAME,
    RemoteDecider,
    createRule,
    decideBody,
    bbaLevel,
    status: { NONE, PENDING, ANSWERED, FAILED },
  };
})(typeof self !== "undefined" ? self : this);
