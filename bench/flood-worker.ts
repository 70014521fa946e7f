// One flooding process of `npm run bench:faults`' connection flood: holds up to `count` TCP connections
// to the aggregator that never send a byte, spread over the given source addresses, and opens a new one
// REOPEN_MS after any of them is closed (as a client retrying would). Prints "held H opened O closed C"
// every 5 s on stdout.
//
//   node dist/bench/flood-worker.js PORT COUNT ADDRESS[,ADDRESS…] [REOPEN_MS]
import { connect } from 'node:net';

const [portText, countText, addressList, reopenText] = process.argv.slice(2);
const reopenMs = Number(reopenText ?? 10_000);
const port = Number(portText);
const count = Number(countText);
const addresses = (addressList ?? '127.0.0.1').split(',');
if (!Number.isInteger(port) || !Number.isInteger(count) || count < 1) {
  process.stderr.write('usage: flood-worker PORT COUNT ADDRESS[,ADDRESS…]\n');
  process.exit(2);
}

let held = 0;
let opened = 0;
let closed = 0;

function open(slot: number): void {
  const socket = connect({ port, host: '127.0.0.1', localAddress: addresses[slot % addresses.length] });
  opened++;
  let connected = false;
  socket.once('connect', () => {
    connected = true;
    held++;
  });
  socket.on('error', () => {});
  // Read and drop whatever the server sends (its HTTP/2 settings), so its close is seen.
  socket.resume();
  socket.once('close', () => {
    if (connected) held--;
    closed++;
    setTimeout(() => open(slot), reopenMs).unref();
  });
}

// Opened in batches, so that the connects themselves do not exhaust this process's descriptors at once.
let next = 0;
const batch = setInterval(() => {
  for (let i = 0; i < 500 && next < count; i++) open(next++);
  if (next >= count) clearInterval(batch);
}, 50);

setInterval(() => process.stdout.write(`held ${held} opened ${opened} closed ${closed}\n`), 5000);
process.on('SIGTERM', () => process.exit(0));
