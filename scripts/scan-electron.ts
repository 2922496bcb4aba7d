/**
 * `npm run scan:electron`: Doyensec's electronegativity (static checks for
 * Electron misconfigurations, @doyensec/electronegativity) over the code that
 * runs in Electron — main/ and preload/, scanned together so that its global
 * checks (CSP, navigation limits, permission handler) see both — and a verdict
 * for CI (.ci/run counts it like typecheck and lint).
 *
 * Exit 0 when every finding is one of {@link ACCEPTED} (each explained in
 * docs/SECURITY.md, "Electronegativity"); exit 1 on a new finding, on a file
 * the scanner could not parse, or on an accepted finding that no longer
 * occurs (so that the list and the document stay true).
 *
 * Its CLI (dist/index.js) is not used: it requires a `commander` it does not
 * declare and breaks on the project's commander 15; the runner's programmatic
 * API is the same scan. Left out: AvailableSecurityFixesGlobalCheck, which
 * asks the network for Electron's release list (CI reaches only npm; Electron
 * upgrades are tracked through npm). The scanner also tries, once, to fetch
 * updated translations of its messages; that fails after 1 s offline and
 * changes nothing.
 */
import { cpSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');

/**
 * Findings reviewed and accepted, by check id and file (line numbers move).
 * Why each is not a vulnerability is in docs/SECURITY.md, "Electronegativity".
 */
const ACCEPTED: Record<string, string> = {
  'PROTOCOL_HANDLER_JS_CHECK main/app/index.ts':
    'parley:// is registered on purpose; links are parsed strictly and every call asks first (deep-link.ts)',
  'CSP_GLOBAL_CHECK main/app/security.ts':
    'the header is set from the constant CONTENT_SECURITY_POLICY, which the check cannot read; the policy is reviewed by hand',
  'PRELOAD_JS_CHECK main/app/index.ts':
    'the preload is ours, sandboxed, and exposes only the typed IPC contract (one frozen object, no raw ipcRenderer)',
};

/** Checks left out, lower-case names as the runner wants them. */
const EXCLUDED = ['availablesecurityfixesglobalcheck'];

interface Issue {
  id: string;
  file: string;
  location: { line: number; column: number };
  severity: { name: string };
  confidence: { name: string };
  manualReview: boolean;
  description: string;
}
interface RunResult {
  globalChecks: number;
  atomicChecks: number;
  errors: { file: string; message: string; tolerable: boolean }[];
  issues: Issue[];
}
type Runner = (options: Record<string, unknown>, forCli: boolean) => Promise<RunResult>;

async function main(): Promise<number> {
  const require = createRequire(import.meta.url);
  const run = require('@doyensec/electronegativity/dist/runner.js') as Runner;
  const scannerVersion = (require('@doyensec/electronegativity/package.json') as { version: string }).version;
  const electronVersion = (JSON.parse(readFileSync(join(ROOT, 'node_modules/electron/package.json'), 'utf8')) as { version: string }).version;

  // One tree holding main/ and preload/ (the runner takes one input folder).
  const input = mkdtempSync(join(tmpdir(), 'parley-electronegativity-'));
  let result: RunResult;
  try {
    for (const dir of ['main', 'preload']) cpSync(join(ROOT, dir), join(input, dir), { recursive: true });
    result = await run(
      {
        input,
        isRelative: true,
        electronVersionOverride: electronVersion,
        customScan: [],
        excludeFromScan: EXCLUDED,
      },
      false,
    );
  } finally {
    rmSync(input, { recursive: true, force: true });
  }

  console.log(
    `electronegativity ${scannerVersion}: ${result.atomicChecks} atomic + ${result.globalChecks} global checks over main/ and preload/ (Electron ${electronVersion})`,
  );
  let failed = false;
  for (const e of result.errors) {
    console.log(`  ${e.tolerable ? 'warning' : 'ERROR'}: could not parse ${e.file}: ${e.message}`);
    if (!e.tolerable) failed = true;
  }
  const seen = new Set<string>();
  for (const i of result.issues) {
    const key = `${i.id} ${i.file}`;
    const verdict = ACCEPTED[key] ? `accepted: ${ACCEPTED[key]}` : 'NEW — fix it, or explain it in docs/SECURITY.md and ACCEPTED';
    console.log(
      `  ${i.id} ${i.file}:${i.location.line} [${i.severity.name}/${i.confidence.name}${i.manualReview ? ', review' : ''}] ${i.description}\n    → ${verdict}`,
    );
    seen.add(key);
    if (!ACCEPTED[key]) failed = true;
  }
  for (const key of Object.keys(ACCEPTED)) {
    if (!seen.has(key)) {
      console.log(`  STALE: accepted finding "${key}" no longer occurs — remove it from ACCEPTED and docs/SECURITY.md`);
      failed = true;
    }
  }
  console.log(failed ? 'scan:electron FAILED' : `scan:electron passed (${result.issues.length} findings, all reviewed)`);
  return failed ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    console.error(`scan:electron could not run: ${err instanceof Error ? err.message : String(err)}`);
    process.exit(1);
  },
);
