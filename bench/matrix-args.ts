// The command line every many-run runner takes (npm run poisoning, npm run strategies):
// the matrix file, --resume DIR to continue a stopped one, --only to run some
// cells, --report-only to write the table of what has run so far.

export interface MatrixArgs {
  file: string;
  resume?: string;
  only?: Set<string>;
  /** Only these columns (e.g. attack kinds), where the runner has columns. */
  columns?: Set<string>;
  /** Skip the runs after the matrix (the poisoning runner's Byzantine-fraction sweep). */
  skipSweep: boolean;
  reportOnly: boolean;
}

/** `onlyWhat` names what --only selects (e.g. "RULE"), for the error message. */
/** `columns`: whether the runner has columns and a sweep (--columns, --skip-sweep); others refuse those flags. */
export function parseMatrixArgs(argv: readonly string[], defaultFile: string, onlyWhat: string, columnsWhat?: string): MatrixArgs {
  let file = defaultFile;
  let resume: string | undefined;
  let only: Set<string> | undefined;
  let reportOnly = false;
  let columns: Set<string> | undefined;
  let skipSweep = false;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--resume') resume = argv[++i];
    else if (a === '--report-only') reportOnly = true;
    else if (a === '--only') only = new Set((argv[++i] ?? '').split(','));
    else if (a === '--columns' && columnsWhat) columns = new Set((argv[++i] ?? '').split(','));
    else if (a === '--skip-sweep' && columnsWhat) skipSweep = true;
    else if (a.startsWith('--')) {
      const extra = columnsWhat ? `, --columns ${columnsWhat},${columnsWhat}, --skip-sweep` : '';
      throw new Error(`unknown option ${a}; use --resume DIR, --only ${onlyWhat},${onlyWhat}${extra} or --report-only`);
    }
    else file = a;
  }
  if (reportOnly && !resume) throw new Error('--report-only needs --resume DIR: the matrix whose results to report');
  return { file, resume, only, columns, skipSweep, reportOnly };
}
