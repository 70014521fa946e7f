// Markdown tables for the reports experiments write.

/** Table cells come from error messages too; a stray '|' or newline would break the markdown row. */
export function markdownCell(s: string): string {
  return s.replace(/\|/g, '\\|').replace(/\s*\n\s*/g, ' ');
}

/** A table as lines, header first; `rightAligned` lists the numeric columns by index. */
export function markdownTable(header: readonly string[], rows: readonly (readonly string[])[], rightAligned: readonly number[] = []): string[] {
  const rule = header.map((_, i) => (rightAligned.includes(i) ? '---:' : '---'));
  return [header, rule, ...rows.map((row) => row.map(markdownCell))].map((cells) => `| ${cells.join(' | ')} |`);
}
