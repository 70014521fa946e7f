// A mistake the user can fix (a wrong flag, a malformed file, a refused key):
// the CLI prints its message and exits 2 instead of showing a stack trace.
// Each room's own error classes extend it, so the CLI needs to know none of them.
import type { z } from 'zod';

export class UserError extends Error {}

/** Formats zod issues as `field.path: message` lines, one per problem. */
export function describeIssues(error: z.ZodError): string {
  return error.issues
    .map((issue) => `  ${issue.path.length ? issue.path.join('.') : '(top level)'}: ${issue.message}`)
    .join('\n');
}
