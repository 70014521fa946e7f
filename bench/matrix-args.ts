// The command line every many-run runner takes (npm run poisoning, npm run strategies):
// the matrix file, --resume DIR to continue a stopped one, --only to run some
// cells, --report-only to write the table of what has run so far.

export interface MatrixArgs {
  file: string;
  resume?: string;
  only?: Set<string>;
  reportOnly: boolean;
}

/** `onlyWhat` names what --only selects (e.g. "RULE"), for the error message. */
export function parseMatrixArgs(argv: readonly string[], defaultFile: string, onlyWhat: string): MatrixArgs {
  let file = defaultFile;
  let resume: string | undefined;
  let only: Set<string> | undefined;
  let reportOnly = false;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--resume') resume = argv[++i];
    else if (a === '--report-only') reportOnly = true;
    else if (a === '--only') only = new Set((argv[++i] ?? '').split(','));
    else if (a.startsWith('--')) throw new Error(`unknown option ${a}; use --resume DIR, --only ${onlyWhat},${onlyWhat} or --report-only`);
    else file = a;
  }
  if (reportOnly && !resume) throw new Error('--report-only needs --resume DIR: the matrix whose results to report');
  return { file, resume, only, reportOnly };
}
