#!/usr/bin/env node
/*
 * Drives Streambed's dash.js page in headless Chromium (playwright-core, the system's
 * Chromium; no browser is ever downloaded) and writes what happened as JSON lines.
 *
 *   node player/web/drive.mjs --url 'http://HOST:PORT/player.html?mpd=...&abr=...&session=...'
 *       [--out FILE] [--allow-host H]... [--timeout-s S] [--idle-timeout-s S]
 *       [--chromium PATH] [--poll-ms MS] [--page-files JSON_FILE]
 *
 * --page-files: {url_path: {file, type, headers}} for the page's own files (player.html and
 * /_streambed/...): the driver serves them itself on 127.0.0.1 (a port of its own, wherever it
 * runs: behind a link, inside the link's namespace) and opens the page there, so that only the
 * session's requests (MPD, segments, decisions: cross-origin, CORS) cross the link.
 *
 * Every event the page records (streambed-player.js) is written as one JSON line to FILE
 * (default: stdout) as soon as it is collected, with the driver's own events:
 * {type: "driver", what: "launched" | "done", ...}, "request" (every request the browser
 * made, with its host), "request_failed", "console" (console messages of level warning and
 * error), "page_error", "crash". Progress goes to stderr.
 *
 * The browser reaches nothing but the hosts of --url and --allow-host (and loopback): every
 * other host name resolves to nothing (--host-resolver-rules), every other address goes to a
 * dead proxy (--proxy-server with a bypass list of the allowed hosts), and Chromium's own
 * background traffic is switched off. A fresh temporary profile is used and removed.
 *
 * Exit status: 0 the page finished (ended, or reached max chunks); 3 the page failed (its
 * reason is in the done event and on stderr); 4 timed out (--timeout-s in all, or
 * --idle-timeout-s without any new page event); 5 the browser could not start or crashed;
 * 2 usage error; 130/143 interrupted by SIGINT/SIGTERM (the browser is closed first).
 */
import fs from "node:fs";
import http from "node:http";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const EXIT = { done: 0, usage: 2, failed: 3, timeout: 4, browser: 5 };
const DEAD_PROXY = "http://127.0.0.1:9"; // the discard port: nothing listens, nothing leaves

function usage(message) {
  process.stderr.write(`drive.mjs: ${message}\n`);
  process.exit(EXIT.usage);
}

function parseArgs(argv) {
  const opts = {
    url: null,
    out: "-",
    allow: [],
    timeoutS: 600,
    idleTimeoutS: 120,
    chromium: process.env.STREAMBED_CHROMIUM || "/usr/bin/chromium",
    pollMs: 200,
  };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    const value = argv[i + 1];
    const need = () => {
      if (value === undefined) {
        usage(`${flag} needs a value`);
      }
      i += 1;
      return value;
    };
    const number = () => {
      const parsed = Number(need());
      if (!(parsed > 0)) {
        usage(`${flag} ${value}: want a positive number`);
      }
      return parsed;
    };
    if (flag === "--url") opts.url = need();
    else if (flag === "--out") opts.out = need();
    else if (flag === "--allow-host") opts.allow.push(need());
    else if (flag === "--timeout-s") opts.timeoutS = number();
    else if (flag === "--idle-timeout-s") opts.idleTimeoutS = number();
    else if (flag === "--chromium") opts.chromium = need();
    else if (flag === "--poll-ms") opts.pollMs = number();
    else if (flag === "--page-files") opts.pageFiles = need();
    else if (flag === "-h" || flag === "--help") {
      const text = fs.readFileSync(new URL(import.meta.url), "utf8");
      const header = text.slice(text.indexOf("/*") + 2, text.indexOf("*/"));
      process.stdout.write(header.replace(/^ \* ?/gm, "").trim() + "\n");
      process.exit(0);
    } else usage(`unknown argument ${flag}`);
  }
  if (!opts.url) {
    usage("--url is required");
  }
  let page;
  try {
    page = new URL(opts.url);
  } catch {
    usage(`--url ${opts.url}: not an absolute URL`);
  }
  opts.pageHost = page.hostname;
  opts.pageOrigin = page.origin;
  return opts;
}

const LOOPBACK = new Set(["127.0.0.1", "localhost", "[::1]", "::1"]);

/**
 * Chromium's command line: headless, no sandbox (root), no traffic but to `hosts`. The page's
 * origin (`pageOrigin`, plain http) is treated as secure even off loopback (behind a link the
 * host has a 10.x address), so that its cross-origin isolation holds and the rule may wait on
 * SharedArrayBuffer.
 */
export function chromiumArgs(hosts, pageOrigin) {
  const allowed = [...new Set(["127.0.0.1", "localhost", ...hosts])];
  const exclude = allowed.map((h) => `EXCLUDE ${h}`).join(", ");
  const secure = [];
  if (pageOrigin && !LOOPBACK.has(new URL(pageOrigin).hostname)) {
    secure.push(`--unsafely-treat-insecure-origin-as-secure=${pageOrigin}`);
  }
  return [
    ...secure,
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-domain-reliability",
    "--disable-client-side-phishing-detection",
    "--disable-breakpad",
    "--no-pings",
    "--disable-dev-shm-usage",
    "--disable-features=OptimizationHints,MediaRouter,Translate,AutofillServerCommunication,InterestFeedContentSuggestions,CertificateTransparencyComponentUpdater",
    `--host-resolver-rules=MAP * ~NOTFOUND, ${exclude}`,
    `--proxy-server=${DEAD_PROXY}`,
    `--proxy-bypass-list=${allowed.join(";")}`,
  ];
}

/** An HTTP server on 127.0.0.1 answering GET/HEAD of the table's paths from disk. */
function servePage(table) {
  const server = http.createServer((req, res) => {
    const path = new URL(req.url, "http://127.0.0.1").pathname;
    const entry = Object.hasOwn(table, path) ? table[path] : null;
    let body = null;
    if (entry && (req.method === "GET" || req.method === "HEAD")) {
      try {
        body = fs.readFileSync(entry.file);
      } catch {
        body = null;
      }
    }
    if (body === null) {
      res.writeHead(404, { "content-type": "text/plain" });
      res.end(`not a player file: ${path}`);
      return;
    }
    res.writeHead(200, { ...entry.headers, "content-type": entry.type, "cache-control": "no-store" });
    res.end(req.method === "HEAD" ? undefined : body);
  });
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve(server));
  });
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const hosts = [opts.pageHost, ...opts.allow];
  const fd = opts.out === "-" ? 1 : fs.openSync(opts.out, "w");
  const write = (event) => fs.writeSync(fd, JSON.stringify(event) + "\n");
  const say = (text) => process.stderr.write(`drive.mjs: ${text}\n`);

  let browser = null;
  let finished = null; // the page's done event
  let stopping = null; // exit status requested by a signal
  let crashed = null;

  const closeBrowser = async () => {
    if (browser) {
      const b = browser;
      browser = null;
      await b.close().catch(() => {});
    }
  };
  for (const [signal, status] of [
    ["SIGINT", 130],
    ["SIGTERM", 143],
  ]) {
    process.on(signal, () => {
      stopping = status;
    });
  }

  let pageServer = null;
  if (opts.pageFiles) {
    try {
      pageServer = await servePage(JSON.parse(fs.readFileSync(opts.pageFiles, "utf8")));
    } catch (exc) {
      usage(`--page-files ${opts.pageFiles}: ${exc.message}`);
    }
    const local = new URL(opts.url);
    local.protocol = "http:";
    local.host = `127.0.0.1:${pageServer.address().port}`;
    opts.url = local.toString();
    opts.pageOrigin = local.origin;
  }
  const args = chromiumArgs(hosts, opts.pageOrigin);
  try {
    browser = await chromium.launch({
      executablePath: opts.chromium,
      headless: true,
      args,
      timeout: 60000,
      handleSIGINT: false,
      handleSIGTERM: false,
      handleSIGHUP: false,
    });
  } catch (exc) {
    write({ type: "driver", what: "done", status: "browser", reason: `cannot start ${opts.chromium}: ${exc.message}` });
    say(`cannot start ${opts.chromium}: ${exc.message}`);
    return EXIT.browser;
  }
  write({
    type: "driver",
    what: "launched",
    epoch_ms: Date.now(),
    chromium: opts.chromium,
    version: browser.version(),
    args,
    allowed_hosts: hosts,
  });
  say(`Chromium ${browser.version()} started; opening ${opts.url}`);

  const context = await browser.newContext({ viewport: { width: 800, height: 480 } });
  const page = await context.newPage();
  const hostOf = (url) => {
    try {
      return new URL(url).hostname;
    } catch {
      return null;
    }
  };
  context.on("request", (request) => {
    write({
      type: "request",
      epoch_ms: Date.now(),
      method: request.method(),
      url: request.url(),
      host: hostOf(request.url()),
      resource_type: request.resourceType(),
    });
  });
  context.on("requestfailed", (request) => {
    const failure = request.failure();
    write({
      type: "request_failed",
      epoch_ms: Date.now(),
      url: request.url(),
      host: hostOf(request.url()),
      error: failure ? failure.errorText : null,
    });
  });
  page.on("console", (message) => {
    const level = message.type();
    if (level === "error" || level === "warning") {
      write({ type: "console", epoch_ms: Date.now(), level, text: message.text(), location: message.location() });
    }
  });
  page.on("pageerror", (error) => {
    write({ type: "page_error", epoch_ms: Date.now(), message: String(error && error.stack ? error.stack : error) });
  });
  page.on("crash", () => {
    crashed = "the page crashed";
  });
  page.on("worker", (worker) => {
    worker.on("console", (message) => {
      if (message.type() === "error") {
        write({ type: "console", epoch_ms: Date.now(), level: "error", text: message.text(), worker: worker.url() });
      }
    });
  });

  const startedAt = Date.now();
  let lastEventAt = Date.now();
  let status = null;
  let reason = null;
  try {
    await page.goto(opts.url, { waitUntil: "load", timeout: 60000 });
    let lastProgress = 0;
    for (;;) {
      if (stopping !== null) {
        status = "interrupted";
        reason = stopping === 130 ? "interrupted (SIGINT)" : "terminated (SIGTERM)";
        break;
      }
      if (crashed) {
        status = "browser";
        reason = crashed;
        break;
      }
      let events = [];
      try {
        events = await page.evaluate(() => (window.__streambed ? window.__streambed.drain() : []));
      } catch (exc) {
        if (crashed || page.isClosed()) {
          status = "browser";
          reason = crashed || "the page closed";
          break;
        }
        throw exc;
      }
      for (const event of events) {
        write(event);
        if (event.type === "done") {
          finished = event;
        }
        if (event.type === "chunk") {
          say(`chunk ${event.chunk_index}: level ${event.quality}, ${event.bytes} bytes, ${Math.round(event.download_ms)} ms`);
        }
        if (event.type === "progress" && event.t_ms - lastProgress >= 10000) {
          lastProgress = event.t_ms;
          say(`currentTime ${event.current_time.toFixed(1)} s, buffer ${event.buffer_s.toFixed(1)} s`);
        }
      }
      if (events.length) {
        lastEventAt = Date.now();
      }
      if (finished) {
        status = finished.status === "done" ? "done" : "failed";
        reason = finished.reason;
        break;
      }
      if (Date.now() - startedAt > opts.timeoutS * 1000) {
        status = "timeout";
        reason = `the page did not finish within ${opts.timeoutS} s`;
        break;
      }
      if (Date.now() - lastEventAt > opts.idleTimeoutS * 1000) {
        status = "timeout";
        reason = `no page event for ${opts.idleTimeoutS} s`;
        break;
      }
      await new Promise((resolve) => setTimeout(resolve, opts.pollMs));
    }
  } catch (exc) {
    status = crashed ? "browser" : "failed";
    reason = crashed || `driver: ${exc.message}`;
  }
  await closeBrowser();
  const code = stopping !== null ? stopping : EXIT[status] !== undefined ? EXIT[status] : EXIT.failed;
  write({ type: "driver", what: "done", epoch_ms: Date.now(), status, reason, exit_code: code });
  say(`${status}${reason ? `: ${reason}` : ""}`);
  if (fd !== 1) {
    fs.closeSync(fd);
  }
  return code;
}

const invoked = process.argv[1] ? fs.realpathSync(process.argv[1]) : null;
if (invoked === fileURLToPath(import.meta.url)) {
  main().then(
    (code) => process.exit(code),
    (exc) => {
      process.stderr.write(`drive.mjs: ${exc && exc.stack ? exc.stack : exc}\n`);
      process.exit(EXIT.browser);
    }
  );
}
