// A run's id names its directory under runs/ and is the experiment_id every
// task and update of the run signs: the experiment's name, when it started
// (UTC, to the second) and a little randomness so two runs started in the
// same second do not collide.
import { randomBytes } from 'node:crypto';

export function newRunId(name: string): string {
  const stamp = new Date().toISOString().replace(/[-:]/g, '').replace('T', '-').slice(0, 15);
  return `${name}-${stamp}-${randomBytes(2).toString('hex')}`;
}
