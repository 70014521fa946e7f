// Rendezvous between colluding attacker processes on one machine, through a
// shared directory of real files.
//
// Threat model. ALIE's attackers (Baruch et al. 2019) do not see the honest
// nodes' updates: each computes its own correct gradient, and together they
// estimate the honest distribution's per-coordinate mean and standard
// deviation from those samples. Here every attacker trains honestly, shares
// that honest update, and waits for the others'; the colluders' honest updates
// are the samples. IPM (Xie et al. 2019) assumes an omniscient attacker that
// knows the mean of the honest updates; it is approximated the same way, by
// the mean of the colluders' honest updates. min-max and min-sum (Shejwalkar &
// Houmansadr 2021) need the benign updates themselves: their mean, spread and
// pairwise distances. The paper's full-knowledge attacker has them; its
// partial-knowledge variant uses the compromised clients' own benign updates,
// which is what is done here: the colluders' honest updates are the benign set.
//
// Layout: `<dir>/r<round>-<nodeId>.f32` holds one node's honest update for a
// round as raw float32 in the machine's byte order (all colluders run on this
// machine). Each is written to a dot-prefixed temporary file and renamed into
// place, so a reader sees a whole file or none. Use a fresh directory per run
// (e.g. under the run's own directory): files of an earlier run with the same
// round numbers would be taken for this run's.

import { randomBytes } from 'node:crypto';
import { mkdir, readdir, readFile, rename, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

/** How often awaitColluders looks at the directory. */
const POLL_MS = 20;
/** Rounds older than round − KEEP_ROUNDS are deleted by each writer. */
const KEEP_ROUNDS = 2;

const NODE_ID = /^[A-Za-z0-9._:-]{1,128}$/;
const UPDATE_FILE = /^r(\d+)-(.+)\.f32$/;
const ANY_FILE = /^\.?r(\d+)-/;

function checkRound(round: number): void {
  if (!Number.isSafeInteger(round) || round < 0) throw new RangeError(`round must be a non-negative integer, got ${round}`);
}

function updateFileName(round: number, nodeId: string): string {
  return `r${round}-${nodeId}.f32`;
}

/**
 * Publishes this attacker's honest update for `round` (replacing one it shared
 * before for the same round), then deletes the files of rounds older than
 * round − 2.
 */
export async function shareHonestUpdate(dir: string, round: number, nodeId: string, delta: Float32Array): Promise<void> {
  checkRound(round);
  if (!NODE_ID.test(nodeId)) throw new RangeError(`node id ${JSON.stringify(nodeId)} is not of the form [A-Za-z0-9._:-]{1,128}`);
  await mkdir(dir, { recursive: true });
  const name = updateFileName(round, nodeId);
  const tmp = join(dir, `.${name}.${process.pid}-${randomBytes(6).toString('hex')}.tmp`);
  try {
    await writeFile(tmp, new Uint8Array(delta.buffer, delta.byteOffset, delta.byteLength), { flag: 'wx' });
    await rename(tmp, join(dir, name));
  } catch (err) {
    await unlink(tmp).catch(() => {});
    // A writer more than two rounds behind can have its temporary file
    // removed by the others' clean-up; nobody waits for that round any more.
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw err;
  }
  await removeOldRounds(dir, round - KEEP_ROUNDS);
}

/**
 * Waits until at least `expected` updates for `round` are in `dir` or
 * `timeoutMs` has passed, then returns every update present for the round,
 * this node's own included, ordered by node id (so colluders that see the
 * same set compute the same crafted update). After a timeout it returns what
 * there is, possibly fewer than `expected` or none. Rejects with an Error
 * named AbortError (its cause the signal's reason) if `signal` aborts.
 */
export async function awaitColluders(
  dir: string,
  round: number,
  expected: number,
  timeoutMs: number,
  signal?: AbortSignal,
): Promise<Float32Array[]> {
  checkRound(round);
  if (!Number.isInteger(expected) || expected < 1) throw new RangeError(`expected must be a positive integer, got ${expected}`);
  if (!(timeoutMs >= 0)) throw new RangeError(`timeoutMs must be ≥ 0, got ${timeoutMs}`);
  const deadline = Date.now() + timeoutMs;
  checkAborted(signal);
  let names = await roundFiles(dir, round);
  while (names.length < expected) {
    const left = deadline - Date.now();
    if (left <= 0) break;
    try {
      await sleep(Math.min(POLL_MS, left), undefined, { signal });
    } catch {
      // Only an abort rejects the timer.
    }
    checkAborted(signal);
    names = await roundFiles(dir, round);
  }
  const updates: Float32Array[] = [];
  for (const name of names) {
    let bytes: Buffer;
    try {
      bytes = await readFile(join(dir, name));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue; // removed meanwhile
      throw err;
    }
    if (bytes.byteLength % Float32Array.BYTES_PER_ELEMENT !== 0) {
      throw new Error(`${join(dir, name)} is ${bytes.byteLength} bytes, not a whole number of float32 values`);
    }
    // A copy, so the array owns an aligned buffer of exactly its size.
    const copy = new Uint8Array(bytes.byteLength);
    copy.set(bytes);
    updates.push(new Float32Array(copy.buffer));
  }
  return updates;
}

/** One kind of rejection for an abort, whether before or while waiting: an Error named AbortError. */
function checkAborted(signal: AbortSignal | undefined): void {
  if (!signal?.aborted) return;
  const error = new Error('stopped waiting for colluders: aborted', { cause: signal.reason });
  error.name = 'AbortError';
  throw error;
}

/** Names of the round's published update files, sorted. */
async function roundFiles(dir: string, round: number): Promise<string[]> {
  let entries: string[];
  try {
    entries = await readdir(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return []; // nobody has written yet
    throw err;
  }
  return entries
    .filter((name) => {
      const m = UPDATE_FILE.exec(name);
      return m !== null && Number(m[1]) === round;
    })
    .sort();
}

/** Deletes update and temporary files of rounds below `oldestKept`. */
async function removeOldRounds(dir: string, oldestKept: number): Promise<void> {
  if (oldestKept <= 0) return;
  const entries = await readdir(dir);
  await Promise.all(
    entries.map(async (name) => {
      const m = ANY_FILE.exec(name);
      if (m === null || Number(m[1]) >= oldestKept) return;
      try {
        await unlink(join(dir, name));
      } catch (err) {
        // Another colluder removed it first.
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      }
    }),
  );
}
