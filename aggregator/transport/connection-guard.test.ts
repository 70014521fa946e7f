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

/**
 * A guard whose sockets are handed to the test, standing in for grpc-js: it reads what each sends
 * (`received`), as grpc-js would, so a peer's close is seen. Returns the port it listens on too.
 */
async function guarded(limits: ConstructorParameters<typeof ConnectionGuard>[0], fdLimit?: number) {
  const handed: Socket[] = [];
  const received = new Map<Socket, Buffer[]>();
  const guard = new ConnectionGuard(limits, fdLimit);
  const port = await guard.listen('127.0.0.1', 0, (s) => {
    handed.push(s);
    received.set(s, []);
    s.on('data', (b: Buffer) => received.get(s)!.push(b));
  });
  return { guard, port, handed, received };
}

const limits = { maxConnections: 100, maxUnproven: 6, maxUnprovenPerAddress: 4, helloTimeoutMs: 3_600_000 };

/** The guard's key of a client's connection: its address and port as the server sees them. */
const peerOf = (c: { socket: Socket }) => `${c.socket.localAddress}:${c.socket.localPort}`;

test('unproven connections are bounded per address and in all; the ones over a bound are closed on arrival', async (t) => {
  const { guard, port } = await guarded(limits);
  const fromTwo = [];
  for (let i = 0; i < 5; i++) fromTwo.push(await open(port, '127.0.0.2'));
  // The one over the per-address bound closes; the four within it stay.
  await fromTwo[4]!.closed;
  await until(() => guard.stats().open === 4);
  t.like(guard.stats(), { refused: { 'unproven-per-address': 1 } });
  // Closing a connection gives its place back.
  fromTwo[0]!.socket.destroy();
  await until(() => guard.stats().open === 3);
  const fromThree = [];
  for (let i = 0; i < 3; i++) fromThree.push(await open(port, '127.0.0.3'));
  await until(() => guard.stats().open === 6);
  t.like(guard.stats(), { open: 6, unproven: 6, silent: 6, proven: 0, accepted: 7, evicted: 0, refused: { unproven: 0, connections: 0 } });
  // All unproven places are taken, 3 and 3. A fourth from 127.0.0.3 would leave it holding 4 against
  // 127.0.0.2's 3: no address holds more than it would, so it is refused.
  const fourth = await open(port, '127.0.0.3');
  await fourth.closed;
  t.like(guard.stats(), { open: 6, refused: { unproven: 1 }, evicted: 0 });
  // A proven connection frees its unproven place: another from 127.0.0.3 is taken.
  guard.prove(peerOf(fromThree[0]!));
  t.like(guard.stats(), { proven: 1, unproven: 5 });
  const later = await open(port, '127.0.0.3');
  await until(() => guard.stats().open === 7);
  t.like(guard.stats(), { unproven: 6, refused: { unproven: 1 }, evicted: 0 });
  for (const c of [...fromTwo, ...fromThree, later]) c.socket.destroy();
  await guard.close();
});

test('when the unproven places are full, a newcomer from a new address takes the place of the oldest connection of the address holding most', async (t) => {
  const { guard, port } = await guarded(limits);
  // A flood from two addresses fills the 6 unproven places: 4 from 127.0.0.2, 2 from 127.0.0.3.
  const flood = [];
  for (let i = 0; i < 4; i++) flood.push(await open(port, '127.0.0.2'));
  for (let i = 0; i < 2; i++) flood.push(await open(port, '127.0.0.3'));
  await until(() => guard.stats().open === 6);
  // A node from a third address gets in; 127.0.0.2's oldest connection is closed for it.
  const newcomer = await open(port, '127.0.0.4');
  await flood[0]!.closed;
  t.false(newcomer.socket.destroyed);
  t.like(guard.stats(), { open: 6, unproven: 6, evicted: 1, refused: { unproven: 0 } });
  // Then 127.0.0.2 and 127.0.0.3 hold 3 and 2: a second newcomer from 127.0.0.4 (it would hold 2) pushes out
  // 127.0.0.2's oldest left, and a flooder from 127.0.0.3 (it would hold 3 against 127.0.0.2's 2) is refused.
  const second = await open(port, '127.0.0.4');
  await flood[1]!.closed;
  const flooder = await open(port, '127.0.0.3');
  await flooder.closed;
  t.false(second.socket.destroyed);
  t.like(guard.stats(), { open: 6, evicted: 2, refused: { unproven: 1 } });
  for (const c of [...flood, newcomer, second]) c.socket.destroy();
  await guard.close();
});

test('a connection is handed over only when its first bytes arrive, with those bytes still to read', async (t) => {
  const { guard, port, handed, received } = await guarded(limits);
  const silent = await open(port);
  const talking = await open(port);
  await until(() => guard.stats().open === 2);
  t.is(handed.length, 0, 'nothing is handed over before a byte arrives');
  t.like(guard.stats(), { silent: 2, unproven: 2 });
  talking.socket.write('PRI * HTTP/2.0');
  await until(() => handed.length === 1);
  t.is(handed[0]!.remotePort, talking.socket.localPort);
  t.like(guard.stats(), { silent: 1, unproven: 2 });
  const got = received.get(handed[0]!)!;
  await until(() => Buffer.concat(got).length >= 14);
  t.is(Buffer.concat(got).toString(), 'PRI * HTTP/2.0', 'the bytes that woke the guard are still there for grpc-js');
  // A connection that ends without a byte is closed, not handed over.
  silent.socket.end();
  await silent.closed;
  await until(() => guard.stats().open === 1);
  t.is(handed.length, 1);
  t.like(guard.stats(), { silent: 0 });
  talking.socket.destroy();
  await guard.close();
});

test('an unproven connection is closed at its hello timeout, said something or not; a proven one is not', async (t) => {
  // The guard reads the timeout when a connection opens: the proven one opens under an hour's, so
  // proving it can never race its timeout; the others open under 200 ms.
  const timing = { ...limits };
  const { guard, port, handed } = await guarded(timing);
  const helloed = await open(port);
  helloed.socket.write('x');
  await until(() => handed.length === 1);
  guard.prove(peerOf(helloed));
  timing.helloTimeoutMs = 200;
  const idle = await open(port);
  const chatty = await open(port);
  chatty.socket.write('x');
  await Promise.all([idle.closed, chatty.closed]);
  await until(() => guard.stats().open === 1);
  t.like(guard.stats(), { timedOut: 2, open: 1, proven: 1, silent: 0 });
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

test('when too many connections are turned away, the listener closes for a while; held connections stay, and it listens again', async (t) => {
  // "More than 3 in the window": a window of an hour, so the count does not depend on how fast this machine is.
  const shedding = { ...limits, maxUnprovenPerAddress: 2, shedAbovePerSecond: 3 / 3600, shedWindowMs: 3_600_000, shedPauseMs: 300 };
  const { guard, port, handed } = await guarded(shedding);
  const helloed = await open(port);
  helloed.socket.write('x');
  await until(() => handed.length === 1);
  guard.prove(peerOf(helloed));
  const held = [await open(port, '127.0.0.2'), await open(port, '127.0.0.2')];
  await until(() => guard.stats().open === 3);
  // Three turned away keep it listening; the fourth closes the listener.
  for (let i = 0; i < 3; i++) await (await open(port, '127.0.0.2')).closed;
  t.like(guard.stats(), { listening: true, sheds: 0 });
  await (await open(port, '127.0.0.2')).closed;
  await until(() => !guard.stats().listening);
  t.like(guard.stats(), { sheds: 1, open: 3, refused: { 'unproven-per-address': 4 } });
  // While it sheds, the kernel refuses new connections; the aggregator never sees them.
  const refused = await new Promise<string>((resolve) => {
    const s = connect({ port, host: '127.0.0.1', localAddress: '127.0.0.4' });
    s.once('connect', () => resolve('connected'));
    s.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
  });
  t.is(refused, 'ECONNREFUSED');
  t.is(guard.stats().accepted, 3);
  t.false(helloed.socket.destroyed, 'a proven connection is kept while the listener sheds');
  t.false(held[0]!.socket.destroyed);
  // Then it listens again, on the same port.
  await until(() => guard.stats().listening);
  const later = await open(port, '127.0.0.4');
  await until(() => guard.stats().open === 4);
  t.true(guard.stats().shedSeconds > 0);
  for (const c of [helloed, ...held, later]) c.socket.destroy();
  await guard.close();
});
