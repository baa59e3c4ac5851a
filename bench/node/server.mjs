// The Node.js peer of the edge benchmark: @octokit/webhooks' createNodeMiddleware
// on Node's own http server, as its README sets it up, with a `push` handler.
// It verifies, parses and answers 200; it stores nothing.
//
// Environment: PORT (required), WEBHOOK_SECRET (required). Listens on 127.0.0.1 only.
import { createServer } from "node:http";
import { Webhooks, createNodeMiddleware } from "@octokit/webhooks";

const port = Number.parseInt(process.env.PORT ?? "", 10);
const secret = process.env.WEBHOOK_SECRET;
if (!Number.isInteger(port) || port <= 0 || !secret) {
  console.error("server.mjs needs PORT and WEBHOOK_SECRET");
  process.exit(2);
}

const webhooks = new Webhooks({ secret });
let pushes = 0;
// A handler that reads what a receiver would act on, so the payload is used.
webhooks.on("push", ({ payload }) => {
  if (payload.ref.startsWith("refs/heads/") && payload.after.length === 40) {
    pushes += 1;
  }
});

const middleware = createNodeMiddleware(webhooks, {
  path: "/v1/webhooks/connectors/github",
});

const server = createServer(async (req, res) => {
  // The middleware answers its own path and returns false for any other.
  if (!(await middleware(req, res))) {
    res.writeHead(404, { "content-type": "text/plain" }).end("not found\n");
  }
});

server.listen(port, "127.0.0.1", () => {
  console.log(`octokit peer listening on 127.0.0.1:${port}`);
});

const stop = () => {
  console.log(`octokit peer stopping after ${pushes} pushes`);
  server.close(() => process.exit(0));
  // Keep-alive connections would hold close() open; the run is over.
  server.closeAllConnections();
};
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
