// The benchmark's provider: an OpenAI-shaped upstream far cheaper than the gateway, so that it is never the
// bottleneck (the runner measures it directly to show that). Node's core `http` only, no packages.
//
//   node bench/mock_upstream.js PORT
//
// Any path answers. The `X-Bench` request header picks the answer, as `key=value` pairs separated by `;`:
//   (absent) or mode=plain       a small chat.completion JSON with Content-Length
//   mode=big;size=N              a JSON body of exactly N bytes with Content-Length
//   mode=sse;first=MS;n=N;gap=MS an SSE stream: headers at once, the first event after `first` ms, then N-1
//                                more events `gap` ms apart (gap=0: all in one go), then `data: [DONE]`
// The request body is always read to the end and discarded.
"use strict";

const http = require("http");

const PLAIN = Buffer.from(
  JSON.stringify({
    id: "chatcmpl-bench",
    object: "chat.completion",
    created: 1700000000,
    model: "bench-model",
    choices: [{ index: 0, message: { role: "assistant", content: "Hello from the bench." }, finish_reason: "stop" }],
    usage: { prompt_tokens: 9, completion_tokens: 5, total_tokens: 14 },
  }),
);
const EVENT = Buffer.from(
  'data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1700000000,"model":"bench-model",' +
    '"choices":[{"index":0,"delta":{"content":"tok"},"finish_reason":null}]}\n\n',
);
const DONE = Buffer.from("data: [DONE]\n\n");
const bigBodies = new Map();

function bigBody(size) {
  let body = bigBodies.get(size);
  if (body === undefined) {
    const head = '{"object":"bench.big","pad":"';
    const tail = '"}';
    body = Buffer.alloc(size, "x");
    body.write(head, 0);
    body.write(tail, size - tail.length);
    bigBodies.set(size, body);
  }
  return body;
}

function parse(header) {
  const options = {};
  for (const pair of (header || "").split(";")) {
    const [key, value] = pair.split("=");
    if (key) options[key.trim()] = (value || "").trim();
  }
  return options;
}

function stream(res, options) {
  const first = Number(options.first || 0);
  const n = Number(options.n || 10);
  const gap = Number(options.gap || 0);
  res.writeHead(200, { "Content-Type": "text/event-stream", "Cache-Control": "no-cache" });
  res.flushHeaders();
  let sent = 0;
  let timer = null;
  res.on("close", () => timer && clearTimeout(timer));
  const next = () => {
    timer = null;
    if (res.destroyed) return;
    if (gap === 0) {
      for (; sent < n; sent++) res.write(EVENT);
    } else {
      res.write(EVENT);
      sent++;
    }
    if (sent >= n) {
      res.end(DONE);
    } else {
      timer = setTimeout(next, gap);
    }
  };
  timer = setTimeout(next, first);
}

function answer(req, res) {
  const options = parse(req.headers["x-bench"]);
  const mode = options.mode || "plain";
  if (mode === "sse") return stream(res, options);
  const body = mode === "big" ? bigBody(Number(options.size)) : PLAIN;
  res.writeHead(200, { "Content-Type": "application/json", "Content-Length": body.length });
  res.end(body);
}

const server = http.createServer((req, res) => {
  req.on("data", () => {});
  req.on("end", () => answer(req, res));
});
server.keepAliveTimeout = 120000;
server.headersTimeout = 130000;
server.requestTimeout = 0;
server.maxRequestsPerSocket = 0;
const port = Number(process.argv[2] || 9000);
server.listen(port, "127.0.0.1", 4096, () => process.stdout.write(`mock listening on 127.0.0.1:${port}\n`));
for (const signal of ["SIGINT", "SIGTERM"]) process.on(signal, () => process.exit(0));
