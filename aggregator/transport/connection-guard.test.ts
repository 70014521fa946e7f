import { connect, type Socket } from 'node:net';
import test from 'ava';
import { ConnectionGuard, openFileLimit, RESERVED_FDS } from './connection-guard.js';

/** Opens a TCP connection from `localAddress`; resolves once connected, with a promise of its close. */
function open(port: number, localAddress = '127.0.0.1'): Promise<{ socket: Socket; closed: Promise<void> }> {
  return new Promise((resolve, reject) => {
    const socket = connect({ port, host: '127.0.0.1', localAddress });
    const closed = new Promise<void>((r) => socket.once('close', () => r()));
    socket.on('error', () => {});
    socket.resume();
    socket.once('connect', () => resolve({ socket, closed }));
    socket.once('close', () => reject(new Error('closed before connecting')));
  });
}

/** Resolves once `done()` holds, looking after each turn of the event loop. */
async function until(done: () => boolean): Promise<void> {
  while (!done()) await new Promise((r) => setImmediate(r));
}

/** A guard whose accepted sockets are held by the test (standing in for grpc-js), and the port it listens on. */
async function guarded(limits: ConstructorParameters<typeof ConnectionGuard>[0], fdLimit?: number) {
  const handed: Socket[] = [];
  const guard = new ConnectionGuard(limits, fdLimit);
  const port = await guard.listen('127.0.0.1', 0, (s) => handed.push(s));
  return { guard, port, handed };
}

const limits = { maxConnections: 100, maxUnproven: 6, maxUnprovenPerAddress: 4, helloTimeoutMs: 3_600_000 };

test('unproven connections are bounded per address and in all; the ones over a bound are closed on arrival', async (t) => {
  const { guard, port, handed } = await guarded(limits);
  const fromTwo = [];
  for (let i = 0; i < 7; i++) fromTwo.push(await open(port, '127.0.0.2'));
  // The three over the per-address bound close; the four within it stay.
  await Promise.all(fromTwo.slice(4).map((c) => c.closed));
  t.is(handed.length, 4);
  const fromThree = [];
  for (let i = 0; i < 3; i++) fromThree.push(await open(port, '127.0.0.3'));
  await fromThree[2]!.closed;
  await until(() => handed.length === 6);
  t.like(guard.stats(), { open: 6, unproven: 6, proven: 0, accepted: 6, refused: { 'unproven-per-address': 3, unproven: 1, connections: 0 } });
  // A proven connection frees its unproven place: another from 127.0.0.3 is taken.
  guard.prove(`${handed[4]!.remoteAddress}:${handed[4]!.remotePort}`);
  t.like(guard.stats(), { proven: 1, unproven: 5 });
  const later = await open(port, '127.0.0.3');
  await until(() => handed.length === 7);
  // Closing a connection gives its place back.
  const gone = new Promise((r) => handed[0]!.once('close', r));
  fromTwo[0]!.socket.destroy();
  await gone;
  await until(() => guard.stats().open === 6);
  t.like(guard.stats(), { open: 6, unproven: 5 });
  for (const c of [...fromTwo, ...fromThree, later]) c.socket.destroy();
  await guard.close();
});

test('an unproven connection is closed at its hello timeout; a proven one is not', async (t) => {
  const { guard, port, handed } = await guarded({ ...limits, helloTimeoutMs: 200 });
  const idle = await open(port);
  const helloed = await open(port);
  await until(() => handed.length === 2);
  const proven = handed.find((s) => s.remotePort === helloed.socket.localPort)!;
  guard.prove(`${proven.remoteAddress}:${proven.remotePort}`);
  await idle.closed;
  await until(() => guard.stats().open === 1);
  t.like(guard.stats(), { timedOut: 1, open: 1, proven: 1 });
  t.false(helloed.socket.destroyed);
  helloed.socket.destroy();
  await helloed.closed;
  await guard.close();
});

test('connections never take the file descriptors reserved for the store', async (t) => {
  const { guard, port } = await guarded({ ...limits, maxConnections: 10_000, maxUnproven: 10_000, maxUnprovenPerAddress: 10_000 }, RESERVED_FDS + 3);
  t.is(guard.max, 3);
  const held = [await open(port), await open(port), await open(port)];
  const over = await open(port);
  await over.closed;
  t.like(guard.stats(), { open: 3, fdLimit: RESERVED_FDS + 3, max: 3, refused: { connections: 1 } });
  for (const c of held) c.socket.destroy();
  await guard.close();
  const limit = openFileLimit();
  t.true(limit === undefined || limit > 0);
});
