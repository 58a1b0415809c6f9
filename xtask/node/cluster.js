// The Node.js peer of herd's `hello` example, for `cargo xtask bench`:
//
//   node cluster.js [--workers N] [--policy rr|none] [--listen ADDR:PORT]
//
// The primary sets cluster.schedulingPolicy before forking N workers (default: one per core),
// prints `listening on http://ADDR:PORT (N workers, policy P)` once every worker listens, and
// stops its workers and exits on SIGTERM or SIGINT. Each worker answers `GET /` with
// `hello from worker <id> pid <pid>\n`; keep-alive and `Connection: close` are honoured (Node's
// http defaults).
'use strict';

const cluster = require('node:cluster');
const http = require('node:http');
const os = require('node:os');

function parseArgs(argv) {
  const args = { workers: os.availableParallelism(), policy: 'rr', listen: '127.0.0.1:8080' };
  for (let i = 0; i < argv.length; i += 2) {
    const [flag, value] = [argv[i], argv[i + 1]];
    if (value === undefined) usage(`${flag} needs a value`);
    if (flag === '--workers') args.workers = Number.parseInt(value, 10);
    else if (flag === '--policy') args.policy = value;
    else if (flag === '--listen') args.listen = value;
    else usage(`unknown argument ${flag}`);
  }
  if (!(args.workers >= 1)) usage('--workers must be at least 1');
  if (args.policy !== 'rr' && args.policy !== 'none') usage('--policy must be rr or none');
  const colon = args.listen.lastIndexOf(':');
  if (colon < 0) usage(`--listen ${args.listen}: expected ADDR:PORT`);
  args.host = args.listen.slice(0, colon).replace(/^\[|\]$/g, '');
  args.port = Number.parseInt(args.listen.slice(colon + 1), 10);
  return args;
}

function usage(message) {
  console.error(`cluster.js: ${message}`);
  console.error('usage: node cluster.js [--workers N] [--policy rr|none] [--listen ADDR:PORT]');
  process.exit(2);
}

const args = parseArgs(process.argv.slice(2));

if (cluster.isPrimary) {
  // Must be set before the first fork; NODE_CLUSTER_SCHED_POLICY would otherwise decide.
  cluster.schedulingPolicy = args.policy === 'rr' ? cluster.SCHED_RR : cluster.SCHED_NONE;
  let listening = 0;
  let stopping = false;
  cluster.on('listening', (_worker, address) => {
    listening += 1;
    if (listening === args.workers) {
      const host = address.addressType === 6 ? `[${address.address}]` : address.address;
      console.log(
        `listening on http://${host}:${address.port} (${args.workers} workers, policy ${args.policy})`,
      );
    }
  });
  cluster.on('exit', (worker, code, signal) => {
    if (!stopping) {
      console.error(`cluster.js: worker ${worker.id} exited (${signal || code})`);
      process.exit(1);
    }
  });
  const stop = () => {
    stopping = true;
    for (const worker of Object.values(cluster.workers)) worker.process.kill('SIGTERM');
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  for (let i = 0; i < args.workers; i += 1) cluster.fork();
} else {
  const body = `hello from worker ${cluster.worker.id} pid ${process.pid}\n`;
  const length = String(Buffer.byteLength(body));
  const server = http.createServer((req, res) => {
    if (req.method === 'GET' && req.url === '/') {
      res.writeHead(200, { 'Content-Type': 'text/plain', 'Content-Length': length });
      res.end(body);
    } else {
      res.writeHead(404, { 'Content-Type': 'text/plain', 'Content-Length': '10' });
      res.end('not found\n');
    }
  });
  server.listen(args.port, args.host);
}
