/*
 * Streambed's dash.js page: plays one MPD with the remote-ABR rule (streambed-abr.js), muted,
 * and records what happened for a driver (drive.mjs) to collect.
 *
 * Query: mpd (absolute http(s) URL, required), abr (decision service base URL, required),
 * session (session id; default dashjs-<random>), algorithm, video, params (a JSON object),
 * buffer (buffer target in s, default 60, as the headless player's cap), timeout (decision
 * timeout in s, default 1), first (level of chunk 0 when the service cannot answer, default 1),
 * max (stop after this many chunks), decider ("xhr": wait for a late decision with a
 * synchronous XMLHttpRequest even where the decision worker could run; default "auto").
 *
 * Times are milliseconds on the session clock: performance.now() minus its value when this
 * script started (`clock_zero_epoch_ms` in the start event is that zero as epoch ms).
 *
 * Events, in order, on window.__streambed (the driver takes them with drain()):
 *   start, manifest, decide_sent / answer / decision (streambed-abr.js), init (an init
 *   segment), chunk (a media segment downloaded: level, bytes, request start/end, download
 *   time, buffer before/after, the stall charged to it), segment_played (a segment's frames
 *   presented: count, sizes, dash.js's rendered level, dropped frames), stall (start, end,
 *   duration; after the first frame played), rendered (dash.js's QUALITY_CHANGE_RENDERED),
 *   progress (every 500 ms: currentTime, buffer), buffer_empty / buffer_loaded (dash.js),
 *   ended, warning, error, done (last: status "done" or "failed", reason, totals).
 */
(function () {
  "use strict";

  const t0 = performance.now();
  const clock = () => performance.now() - t0;
  const epochZeroMs = performance.timeOrigin + t0;
  const statusLine = document.getElementById("status");

  const state = {
    events: [],
    done: false,
    ended: false,
    drain() {
      const out = this.events;
      this.events = [];
      return out;
    },
  };
  window.__streambed = state;

  function emit(event) {
    if (event.t_ms === undefined) {
      event.t_ms = clock();
    }
    state.events.push(event);
    if (event.type === "error" || event.type === "done") {
      statusLine.textContent += `${event.type}: ${event.message || event.reason || ""}\n`;
    }
  }

  function finish(status, reason, extra) {
    if (state.done) {
      return;
    }
    state.done = true;
    emit(Object.assign({ type: "done", status, reason: reason || null }, extra || {}));
  }

  window.addEventListener("error", (e) =>
    emit({ type: "error", where: "page", message: String(e.message || e) })
  );
  window.addEventListener("unhandledrejection", (e) =>
    emit({ type: "error", where: "promise", message: String(e.reason) })
  );

  // --- configuration ------------------------------------------------------------------------

  const query = new URLSearchParams(location.search);

  function absoluteUrl(name) {
    const value = query.get(name);
    if (!value) {
      throw new Error(`query parameter ${name} is required (an absolute http(s) URL)`);
    }
    let url;
    try {
      url = new URL(value); // no base: a relative URL throws
    } catch (exc) {
      throw new Error(`${name}=${value}: not an absolute URL`);
    }
    if (url.protocol !== "http:" && url.protocol !== "https:") {
      throw new Error(`${name}=${value}: need an http(s) URL`);
    }
    return url.href;
  }

  function numberParam(name, fallback, check) {
    const value = query.get(name);
    if (value === null || value === "") {
      return fallback;
    }
    const parsed = Number(value);
    if (!Number.isFinite(parsed) || !check(parsed)) {
      throw new Error(`${name}=${value}: not a valid value`);
    }
    return parsed;
  }

  function config() {
    const params = query.get("params");
    let parsedParams = null;
    if (params) {
      parsedParams = JSON.parse(params);
      if (parsedParams === null || typeof parsedParams !== "object" || Array.isArray(parsedParams)) {
        throw new Error(`params=${params}: want a JSON object`);
      }
    }
    const decider = query.get("decider") || "auto";
    if (decider !== "auto" && decider !== "xhr") {
      throw new Error(`decider=${decider}: choose auto or xhr`);
    }
    return {
      mpdUrl: absoluteUrl("mpd"),
      abrUrl: absoluteUrl("abr"),
      sessionId: query.get("session") || `dashjs-${Math.random().toString(16).slice(2, 14)}`,
      algorithm: query.get("algorithm") || null,
      video: query.get("video") || null,
      params: parsedParams,
      bufferS: numberParam("buffer", 60, (v) => v > 0),
      timeoutMs: 1000 * numberParam("timeout", 1, (v) => v > 0),
      firstQuality: numberParam("first", 1, (v) => Number.isInteger(v) && v >= 0),
      maxChunks: numberParam("max", null, (v) => Number.isInteger(v) && v >= 1),
      decider,
    };
  }

  // --- the MPD, read once here for the ladder (dash.js reads it again itself) -------------

  function isoDuration(text) {
    const m = /^P(?:(\d+(?:\.\d*)?)D)?(?:T(?:(\d+(?:\.\d*)?)H)?(?:(\d+(?:\.\d*)?)M)?(?:(\d+(?:\.\d*)?)S)?)?$/.exec(
      (text || "").trim()
    );
    if (!m) {
      return NaN;
    }
    const [d, h, mi, s] = m.slice(1).map((v) => (v ? Number(v) : 0));
    return d * 86400 + h * 3600 + mi * 60 + s;
  }

  function segmentTemplate(rep) {
    for (let node = rep; node && node.nodeType === 1; node = node.parentNode) {
      const found = Array.from(node.children).find((c) => c.localName === "SegmentTemplate");
      if (found) {
        return found;
      }
    }
    return null;
  }

  /** The MPD's text: three attempts, 0.5 s then 1 s apart (as dash.js retries it). */
  async function fetchManifest(mpdUrl) {
    let failure = null;
    for (let attempt = 0; attempt < 3; attempt++) {
      if (attempt) {
        await new Promise((resolve) => setTimeout(resolve, 500 * attempt));
      }
      try {
        const response = await fetch(mpdUrl, { cache: "no-store" });
        if (response.ok) {
          return await response.text();
        }
        failure = `HTTP ${response.status}`;
        if (response.status < 500) {
          break; // not there: asking again will not help
        }
      } catch (exc) {
        failure = String(exc.message || exc);
      }
    }
    throw new Error(`MPD ${mpdUrl}: ${failure}`);
  }

  async function readManifest(mpdUrl) {
    const started = clock();
    const text = await fetchManifest(mpdUrl);
    const doc = new DOMParser().parseFromString(text, "application/xml");
    if (doc.getElementsByTagName("parsererror").length) {
      throw new Error(`MPD ${mpdUrl}: not XML`);
    }
    const mpd = doc.documentElement;
    const sets = Array.from(doc.getElementsByTagNameNS("*", "AdaptationSet"));
    const isVideo = (node) =>
      node.getAttribute("contentType") === "video" ||
      (node.getAttribute("mimeType") || "").startsWith("video/");
    const videoSet = sets.find(
      (set) =>
        isVideo(set) ||
        Array.from(set.getElementsByTagNameNS("*", "Representation")).some(isVideo)
    );
    if (!videoSet) {
      throw new Error(`MPD ${mpdUrl}: no video AdaptationSet`);
    }
    const reps = Array.from(videoSet.getElementsByTagNameNS("*", "Representation"))
      .map((rep) => ({
        id: rep.getAttribute("id"),
        bandwidth: Number(rep.getAttribute("bandwidth")),
        width: Number(rep.getAttribute("width") || videoSet.getAttribute("width") || 0),
        height: Number(rep.getAttribute("height") || videoSet.getAttribute("height") || 0),
        codecs: rep.getAttribute("codecs") || videoSet.getAttribute("codecs") || "",
        mimeType: rep.getAttribute("mimeType") || videoSet.getAttribute("mimeType") || "video/mp4",
        template: segmentTemplate(rep),
      }))
      .sort((a, b) => a.bandwidth - b.bandwidth);
    if (!reps.length || reps.some((r) => !(r.bandwidth > 0))) {
      throw new Error(`MPD ${mpdUrl}: video Representations need a bandwidth`);
    }
    const template = reps[0].template;
    const timescale = template ? Number(template.getAttribute("timescale") || 1) : NaN;
    const chunkS = template ? Number(template.getAttribute("duration")) / timescale : NaN;
    const durationS = isoDuration(mpd.getAttribute("mediaPresentationDuration"));
    if (!(chunkS > 0) || !(durationS > 0)) {
      throw new Error(
        `MPD ${mpdUrl}: need a SegmentTemplate@duration and a mediaPresentationDuration`
      );
    }
    return {
      ladderKbps: reps.map((r) => r.bandwidth / 1000),
      ids: reps.map((r) => r.id),
      sizes: reps.map((r) => [r.width, r.height]),
      codecs: reps.map((r) => `${r.mimeType}; codecs="${r.codecs}"`),
      chunkS,
      durationS,
      numChunks: Math.ceil(durationS / chunkS - 1e-6),
      downloadMs: clock() - started,
    };
  }

  // --- the session ------------------------------------------------------------------------

  async function main() {
    let cfg;
    try {
      cfg = config();
    } catch (exc) {
      finish("failed", String(exc.message || exc));
      return;
    }
    const video = document.getElementById("video");
    video.muted = true;
    emit({
      type: "start",
      t_ms: 0,
      clock_zero_epoch_ms: epochZeroMs,
      mpd: cfg.mpdUrl,
      abr: cfg.abrUrl,
      session_id: cfg.sessionId,
      algorithm: cfg.algorithm,
      config: cfg,
      user_agent: navigator.userAgent,
      dashjs_version: window.dashjs ? dashjs.Version || null : null,
      cross_origin_isolated: Boolean(window.crossOriginIsolated),
      h264: typeof MediaSource !== "undefined" && MediaSource.isTypeSupported('video/mp4; codecs="avc1.64001f"'),
    });
    if (typeof MediaSource === "undefined" || !MediaSource.isTypeSupported('video/mp4; codecs="avc1.64001f"')) {
      finish("failed", "this browser cannot decode H.264 through MediaSource (avc1.64001f)");
      return;
    }
    if (!window.dashjs) {
      finish("failed", "dash.js did not load (/_streambed/dash.all.min.js)");
      return;
    }

    let manifest;
    try {
      manifest = await readManifest(cfg.mpdUrl);
    } catch (exc) {
      finish("failed", String(exc.message || exc));
      return;
    }
    const unsupported = manifest.codecs.filter((c) => !MediaSource.isTypeSupported(c));
    emit({
      type: "manifest",
      ladder_kbps: manifest.ladderKbps,
      ids: manifest.ids,
      sizes: manifest.sizes,
      codecs: manifest.codecs,
      chunk_s: manifest.chunkS,
      duration_s: manifest.durationS,
      num_chunks: manifest.numChunks,
      download_ms: manifest.downloadMs,
      unsupported,
    });
    if (unsupported.length) {
      finish("failed", `this browser cannot decode ${unsupported.join(", ")}`);
      return;
    }
    const levels = manifest.ladderKbps.length;
    const levelOfId = new Map(manifest.ids.map((id, level) => [id, level]));
    const sizeKeys = manifest.sizes.map(([w, h]) => `${w}x${h}`);
    const lastChunk = Math.min(manifest.numChunks, cfg.maxChunks || manifest.numChunks) - 1;

    // Stalls: from "waiting" to "playing", once the first frame has played.
    const stalls = [];
    let stallStart = null;
    let firstPlayingMs = null;

    function stallWithin(fromMs, toMs) {
      let total = 0;
      const intervals = stalls.map((s) => [s.start_ms, s.end_ms]);
      if (stallStart !== null) {
        intervals.push([stallStart, toMs]);
      }
      for (const [a, b] of intervals) {
        total += Math.max(0, Math.min(b, toMs) - Math.max(a, fromMs));
      }
      return total;
    }

    function bufferAhead() {
      const t = video.currentTime;
      const ranges = video.buffered;
      for (let i = 0; i < ranges.length; i++) {
        if (ranges.start(i) <= t + 0.1 && t < ranges.end(i)) {
          return ranges.end(i) - t;
        }
      }
      return 0;
    }

    // Per-chunk measurements, for the next decision and the log.
    const started = new Map(); // chunk -> {t_ms, buffer_s, attempts}
    let lastDone = -1; // highest chunk downloaded
    let lastEndMs = null; // when it finished
    let previous = null; // what was measured for it (the next request's "last" fields)

    const decider = new StreambedABR.RemoteDecider({
      serviceUrl: cfg.abrUrl,
      sessionId: cfg.sessionId,
      algorithm: cfg.algorithm,
      video: cfg.video,
      params: cfg.params,
      timeoutMs: cfg.timeoutMs,
      firstQuality: cfg.firstQuality,
      levels,
      numChunks: lastChunk + 1,
      clock,
      epochZeroMs,
      workerUrl: "/_streambed/streambed-decide-worker.js",
      mode: cfg.decider,
      emit,
    });
    const bodyFor = (chunk, bufferS) =>
      StreambedABR.decideBody(cfg, chunk, bufferS, chunk > 0 ? previous : null);

    // Chunk 0: decided before dash.js starts, which then fetches it at that level.
    decider.prefetch(0, bodyFor(0, 0));
    await decider.whenAnswered(0);
    const first = decider.decide(0, 0, () => bodyFor(0, 0), true);

    const player = dashjs.MediaPlayer().create();
    const off = { active: false };
    player.updateSettings({
      debug: { logLevel: dashjs.Debug.LOG_LEVEL_WARNING },
      streaming: {
        abr: {
          rules: {
            throughputRule: off,
            bolaRule: off,
            insufficientBufferRule: off,
            switchHistoryRule: off,
            droppedFramesRule: off,
            abandonRequestsRule: off,
            l2ARule: off,
            loLPRule: off,
          },
          autoSwitchBitrate: { video: true },
          initialBitrate: { video: manifest.ladderKbps[first.quality] },
          limitBitrateByPortal: false,
        },
        buffer: {
          fastSwitchEnabled: false,
          bufferTimeDefault: cfg.bufferS,
          bufferTimeAtTopQuality: cfg.bufferS,
          bufferTimeAtTopQualityLongForm: cfg.bufferS,
        },
        utcSynchronization: { enabled: false, useManifestDateHeaderTimeSource: false },
        lastBitrateCachingInfo: { enabled: false },
        lastMediaSettingsCachingInfo: { enabled: false },
        cmcd: { enabled: false },
      },
    });
    player.addABRCustomRule(
      "qualitySwitchRules",
      StreambedABR.RULE_NAME,
      StreambedABR.createRule(dashjs, decider, {
        nextChunk: () => (lastDone + 1 <= lastChunk ? lastDone + 1 : null),
        bufferS: bufferAhead,
        bodyFor,
        emit,
      })
    );
    const E = dashjs.MediaPlayer.events;

    function chunkOf(request) {
      if (Number.isFinite(request.startTime)) {
        return Math.round(request.startTime / manifest.chunkS);
      }
      return request.index;
    }

    function levelOf(representation) {
      if (!representation) {
        return null;
      }
      const level = levelOfId.get(String(representation.id));
      return level === undefined ? null : level;
    }

    function timing(url, fallbackStartMs, fallbackEndMs) {
      const entries = performance.getEntriesByName(url, "resource");
      const entry = entries[entries.length - 1];
      if (entry && entry.responseEnd > 0 && entry.startTime - t0 >= fallbackStartMs - 50) {
        return {
          start_ms: entry.startTime - t0,
          end_ms: entry.responseEnd - t0,
          first_byte_ms: entry.responseStart - t0,
          transfer_bytes: entry.transferSize,
          timing: "resource",
        };
      }
      return { start_ms: fallbackStartMs, end_ms: fallbackEndMs, timing: "events" };
    }

    const startedAt = new Map(); // url -> when dash.js started loading it (init segments)
    player.on(E.FRAGMENT_LOADING_STARTED, (e) => {
      const request = e.request;
      if (!request || request.mediaType !== "video") {
        return;
      }
      startedAt.set(request.url, clock());
      if (request.type !== "MediaSegment") {
        return;
      }
      const chunk = chunkOf(request);
      const before = started.get(chunk);
      started.set(chunk, {
        t_ms: clock(),
        buffer_s: bufferAhead(),
        attempts: before ? before.attempts + 1 : 1,
      });
    });

    player.on(E.FRAGMENT_LOADING_COMPLETED, (e) => {
      const request = e.request;
      if (!request || request.mediaType !== "video") {
        return;
      }
      const nowMs = clock();
      const level = levelOf(request.representation);
      if (e.error) {
        emit({
          type: "warning",
          message: `${request.type} ${request.url}: ${e.error.message || e.error.code || e.error}`,
        });
        return;
      }
      const bytes = e.response && e.response.byteLength !== undefined ? e.response.byteLength : request.bytesLoaded;
      if (request.type !== "MediaSegment") {
        const begunMs = startedAt.has(request.url) ? startedAt.get(request.url) : nowMs;
        const times = timing(request.url, begunMs, nowMs);
        emit(Object.assign({ type: "init", quality: level, bytes, url: request.url }, times));
        return;
      }
      const chunk = chunkOf(request);
      if (chunk > lastChunk || state.done) {
        return; // past max: dash.js was stopped, this one is not the session's
      }
      const begun = started.get(chunk) || { t_ms: nowMs, buffer_s: 0, attempts: 1 };
      const times = timing(request.url, begun.t_ms, nowMs);
      const downloadMs = Math.max(times.end_ms - times.start_ms, 0);
      const segmentEnd = Math.min((chunk + 1) * manifest.chunkS, manifest.durationS);
      // The buffer once this segment is appended (it is, a few ms from now).
      const bufferAfter = Math.max(segmentEnd - video.currentTime, bufferAhead(), 0);
      const fromMs = chunk === 0 ? decider.requests.get(0).sentMs : lastEndMs;
      const rebufferMs = chunk === 0 ? times.end_ms - fromMs : stallWithin(fromMs, nowMs);
      const decision = decider.decisions.get(chunk) || null;
      emit(
        Object.assign(
          {
            type: "chunk",
            chunk_index: chunk,
            quality: level,
            representation_id: request.representation ? String(request.representation.id) : null,
            bitrate_kbps: level === null ? null : manifest.ladderKbps[level],
            decided_quality: decision ? decision.quality : null,
            bytes,
            download_ms: downloadMs,
            buffer_before_s: begun.buffer_s,
            buffer_s: bufferAfter,
            rebuffer_ms: rebufferMs,
            attempts: begun.attempts,
            url: request.url,
          },
          times
        )
      );
      if (chunk > lastDone) {
        lastDone = chunk;
        lastEndMs = nowMs;
        previous = {
          quality: level === null ? 0 : level,
          bytes,
          downloadS: downloadMs / 1000,
          rebufferS: rebufferMs / 1000,
        };
        if (chunk < lastChunk) {
          decider.prefetch(chunk + 1, bodyFor(chunk + 1, bufferAfter));
        } else if (cfg.maxChunks && chunk + 1 >= cfg.maxChunks) {
          flushSegment();
          finish("done", `max_chunks ${cfg.maxChunks} reached`, totals());
          setTimeout(() => player.reset(), 0); // no more downloads
        }
      }
    });

    let renderedLevel = null;
    player.on(E.QUALITY_CHANGE_RENDERED, (e) => {
      if (e.mediaType !== "video") {
        return;
      }
      renderedLevel = levelOf(e.newRepresentation);
      emit({ type: "rendered", quality: renderedLevel, current_time: video.currentTime });
    });
    player.on(E.BUFFER_EMPTY, (e) => {
      if (e.mediaType === "video") {
        emit({ type: "buffer_empty", current_time: video.currentTime });
      }
    });
    player.on(E.BUFFER_LOADED, (e) => {
      if (e.mediaType === "video") {
        emit({ type: "buffer_loaded", current_time: video.currentTime });
      }
    });
    player.on(E.ERROR, (e) => {
      const error = e.error || {};
      const message = `dash.js error ${error.code || ""}: ${error.message || JSON.stringify(error)}`;
      emit({ type: "error", where: "dash.js", code: error.code || null, message });
      flushSegment();
      finish("failed", message, totals());
    });
    player.on(E.PLAYBACK_ERROR, (e) => {
      emit({ type: "error", where: "playback", message: String(e.error && e.error.message) });
    });

    // Frames presented, per segment: real decoding, the rendered level, dropped frames.
    let segment = null;
    function playbackQuality() {
      const q = video.getVideoPlaybackQuality();
      return { total: q.totalVideoFrames, dropped: q.droppedVideoFrames };
    }
    function flushSegment() {
      if (segment === null) {
        return;
      }
      const q = playbackQuality();
      const sizes = Object.entries(segment.sizes).sort((a, b) => b[1] - a[1]);
      const dashLevels = Object.entries(segment.dashLevels).sort((a, b) => b[1] - a[1]);
      const bySize = sizes.length ? sizeKeys.indexOf(sizes[0][0]) : -1;
      const uniqueSizes = new Set(sizeKeys).size === sizeKeys.length;
      emit({
        type: "segment_played",
        chunk_index: segment.chunk,
        frames: segment.frames,
        sizes: segment.sizes,
        first_frame_ms: segment.firstMs,
        last_frame_ms: segment.lastMs,
        quality_by_size: bySize >= 0 && uniqueSizes ? bySize : null,
        quality_dashjs: dashLevels.length ? Number(dashLevels[0][0]) : null,
        dropped_frames: q.dropped - segment.dropped0,
        decoded_frames: q.total - segment.total0,
      });
      segment = null;
    }
    function onFrame(now, meta) {
      const chunk = Math.min(manifest.numChunks - 1, Math.floor(meta.mediaTime / manifest.chunkS + 1e-6));
      if (segment === null || segment.chunk !== chunk) {
        flushSegment();
        const q = playbackQuality();
        segment = {
          chunk,
          frames: 0,
          sizes: {},
          dashLevels: {},
          firstMs: clock(),
          lastMs: clock(),
          dropped0: q.dropped,
          total0: q.total,
        };
      }
      segment.frames += 1;
      segment.lastMs = clock();
      const key = `${meta.width}x${meta.height}`;
      segment.sizes[key] = (segment.sizes[key] || 0) + 1;
      if (renderedLevel !== null) {
        segment.dashLevels[renderedLevel] = (segment.dashLevels[renderedLevel] || 0) + 1;
      }
      if (!state.done) {
        video.requestVideoFrameCallback(onFrame);
      }
    }
    if (typeof video.requestVideoFrameCallback === "function") {
      video.requestVideoFrameCallback(onFrame);
    } else {
      emit({ type: "warning", message: "requestVideoFrameCallback missing: no per-frame record" });
    }

    video.addEventListener("playing", () => {
      const nowMs = clock();
      if (firstPlayingMs === null) {
        firstPlayingMs = nowMs;
        emit({ type: "playing", first: true, current_time: video.currentTime });
      }
      if (stallStart !== null) {
        const stall = { start_ms: stallStart, end_ms: nowMs, duration_ms: nowMs - stallStart };
        stalls.push(stall);
        stallStart = null;
        emit(Object.assign({ type: "stall", current_time: video.currentTime }, stall));
      }
    });
    video.addEventListener("waiting", () => {
      if (firstPlayingMs !== null && stallStart === null && !video.ended) {
        stallStart = clock();
        emit({ type: "waiting", current_time: video.currentTime });
      }
    });
    video.addEventListener("error", () => {
      const error = video.error;
      const message = `video element error ${error ? error.code : "?"}: ${error ? error.message : ""}`;
      emit({ type: "error", where: "video", message });
      flushSegment();
      finish("failed", message, totals());
    });

    function totals() {
      const q = playbackQuality();
      return {
        current_time: video.currentTime,
        duration: video.duration,
        ended: video.ended,
        startup_ms: firstPlayingMs,
        stall_ms: stallWithin(0, clock()),
        stalls: stalls.length + (stallStart !== null ? 1 : 0),
        frames_decoded: q.total,
        frames_dropped: q.dropped,
        decisions: decider.decisions.size,
        blocking_waits: decider.blockingWaits,
        decision_mode: decider.mode,
      };
    }

    video.addEventListener("ended", () => {
      flushSegment();
      state.ended = true;
      emit({ type: "ended", current_time: video.currentTime, duration: video.duration });
      finish("done", null, totals());
    });

    const progress = setInterval(() => {
      if (state.done) {
        clearInterval(progress);
        return;
      }
      emit({
        type: "progress",
        current_time: video.currentTime,
        buffer_s: bufferAhead(),
        ready_state: video.readyState,
        paused: video.paused,
      });
    }, 500);

    performance.setResourceTimingBufferSize(100000);
    player.initialize(video, cfg.mpdUrl, true);
  }

  main().catch((exc) => {
    emit({ type: "error", where: "main", message: `${exc}\n${exc.stack || ""}` });
    finish("failed", String(exc.message || exc));
  });
})();
