import { readFileSync, writeFileSync } from 'node:fs';

const TITLE = '# Parley benchmarks\n\nFigures from `npm run bench` and friends; each section names its command and machine.\n';

/**
 * Writes one bench's section of docs/BENCHMARKS.md: `lines` between the markers
 * `<!-- bench:<name>:start -->` and `<!-- bench:<name>:end -->`, replacing what
 * stood between them, or appended at the end when the markers are not there yet
 * (the file is made, with its title, when missing). Text outside the markers —
 * the narratives of earlier runs — is kept.
 * @returns the path written.
 */
export function writeBenchSection(name: string, lines: string[], path = 'docs/BENCHMARKS.md'): string {
  let doc = TITLE;
  try {
    doc = readFileSync(path, 'utf8');
  } catch {
    // a new file
  }
  const start = `<!-- bench:${name}:start -->`;
  const end = `<!-- bench:${name}:end -->`;
  const section = [start, ...lines, end].join('\n');
  const from = doc.indexOf(start);
  const to = doc.indexOf(end, from);
  doc = from >= 0 && to >= 0 ? doc.slice(0, from) + section + doc.slice(to + end.length) : `${doc.trimEnd()}\n\n${section}\n`;
  writeFileSync(path, doc);
  return path;
}
