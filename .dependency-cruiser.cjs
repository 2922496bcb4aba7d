/**
 * Parley's layer rules (docs: /DESIGN.md "Layout"), enforced by `npm run lint`:
 *
 *   depcruise common native main preload renderer server --config .dependency-cruiser.cjs
 *
 * | folder                  | may import                                                     |
 * |-------------------------|----------------------------------------------------------------|
 * | common/                 | common/, npm packages with no Node/DOM needs                   |
 * | native/                 | common/, node builtins, npm (incl. the native modules)         |
 * | main/core, main/media   | common/, native/, each other, node builtins, npm — no electron |
 * | main/cli                | main/core, main/media, common/, node builtins, npm             |
 * | main/app                | all of main/, common/, native/, electron, node builtins, npm   |
 * | preload/                | common/, electron, npm (bundled into one sandboxed file)       |
 * | renderer/               | common/, npm — no node builtins, no electron                   |
 * | server/                 | common/, node builtins, npm — never main/ or native/           |
 *
 * The native npm modules (naudiodon, @discordjs/opus, @github/keytar, keytar,
 * uiohook-napi, better-sqlite3) may be imported from native/ only, so that the
 * rest of the code depends on a small interface that fails with a clear error
 * when a system library is missing.
 * The server-only dependencies (fastify, @fastify/*, @node-rs/argon2) may be
 * imported from server/ only; electron-builder.yml leaves them out of the app.
 * EXCEPTION: server/ may import better-sqlite3. The server is a separate
 * program (no Electron, no renderer), its store is the only user of SQLite,
 * and routing it through native/ would make the server depend on the client's
 * native layer.
 *
 * Paths in the rules are relative to the cruise's baseDir (the repo root; the
 * layering unit test points baseDir at small fixture trees with the same shape).
 * Type-only imports count (tsPreCompilationDeps), because a type import still
 * ties one layer to another.
 */

/** The native npm modules, as resolved paths (node_modules/<name>/…) or unresolved names. */
const NATIVE_MODULES =
  '(^|node_modules/)(naudiodon|@discordjs/opus|@github/keytar|keytar|uiohook-napi|better-sqlite3)(/|$)';
const NATIVE_MODULES_BUT_SQLITE =
  '(^|node_modules/)(naudiodon|@discordjs/opus|@github/keytar|keytar|uiohook-napi)(/|$)';
const ELECTRON = '(^|node_modules/)electron(/|$)';

/** @type {import('dependency-cruiser').IConfiguration} */
module.exports = {
  forbidden: [
    // ── common/ ──────────────────────────────────────────────────────────
    {
      name: 'common-only-common',
      comment:
        'common/ runs everywhere (main, renderer, server, browser tests): it may import only common/ and npm packages.',
      severity: 'error',
      from: { path: '^common/' },
      to: { dependencyTypes: ['local'], pathNot: '^common/' },
    },
    {
      name: 'common-no-node-builtins',
      comment: 'common/ must not need Node: no node builtins (node:fs, crypto, …).',
      severity: 'error',
      from: { path: '^common/' },
      to: { dependencyTypes: ['core'] },
    },
    {
      name: 'common-no-electron-or-native',
      comment: 'common/ must not need Electron or a native module.',
      severity: 'error',
      from: { path: '^common/' },
      to: { path: [ELECTRON, NATIVE_MODULES] },
    },

    // ── native/ ──────────────────────────────────────────────────────────
    {
      name: 'native-only-common',
      comment: 'native/ may import common/ (plus node builtins and npm), nothing else of ours.',
      severity: 'error',
      from: { path: '^native/' },
      to: { path: '^(main|preload|renderer|server|test|scripts|bench)/' },
    },
    {
      name: 'native-no-electron',
      comment: 'native/ is shared with the headless client: it must not need electron.',
      severity: 'error',
      from: { path: '^native/' },
      to: { path: ELECTRON },
    },

    // ── main/core, main/media ────────────────────────────────────────────
    {
      name: 'core-media-no-electron',
      comment: 'main/core and main/media also run headless (main/cli): never import electron.',
      severity: 'error',
      from: { path: '^main/(core|media)/' },
      to: { path: ELECTRON },
    },
    {
      name: 'core-media-not-upwards',
      comment:
        'main/core and main/media may import common/ and native/ only — never main/app, main/cli, preload, renderer or server.',
      severity: 'error',
      from: { path: '^main/(core|media)/' },
      to: { path: '^(main/(app|cli)|preload|renderer|server|test|scripts|bench)/' },
    },

    // ── main/cli ─────────────────────────────────────────────────────────
    {
      name: 'cli-no-electron',
      comment: 'main/cli is the headless client: no electron.',
      severity: 'error',
      from: { path: '^main/cli/' },
      to: { path: ELECTRON },
    },
    {
      name: 'cli-only-core-media-common',
      comment:
        'main/cli imports main/core, main/media and common/; native/ only through core/media.',
      severity: 'error',
      from: { path: '^main/cli/' },
      to: { path: '^(main/app|native|preload|renderer|server|test|scripts|bench)/' },
    },

    // ── main/app ─────────────────────────────────────────────────────────
    {
      name: 'app-not-into-other-programs',
      comment:
        'main/app may import all of main/, common/, native/ and electron — not preload, renderer or server.',
      severity: 'error',
      from: { path: '^main/app/' },
      to: { path: '^(preload|renderer|server|test|scripts|bench)/' },
    },

    // ── preload/ ─────────────────────────────────────────────────────────
    {
      name: 'preload-only-common-electron',
      comment: 'preload/ may import common/ and electron only.',
      severity: 'error',
      from: { path: '^preload/' },
      to: { path: '^(main|native|renderer|server|test|scripts|bench)/' },
    },
    {
      name: 'preload-no-node-builtins',
      comment: 'preload/ is sandboxed: node builtins are not available to it.',
      severity: 'error',
      from: { path: '^preload/' },
      to: { dependencyTypes: ['core'] },
    },

    // ── renderer/ ────────────────────────────────────────────────────────
    {
      name: 'renderer-only-common',
      comment: 'renderer/ (sandboxed browser page) may import common/ only.',
      severity: 'error',
      from: { path: '^renderer/' },
      to: { path: '^(main|native|preload|server|test|scripts|bench)/' },
    },
    {
      name: 'renderer-no-node-builtins',
      comment: 'renderer/ has no Node: no node builtins.',
      severity: 'error',
      from: { path: '^renderer/' },
      to: { dependencyTypes: ['core'] },
    },
    {
      name: 'renderer-no-electron',
      comment: 'renderer/ talks to main over window.parley (preload), never through electron.',
      severity: 'error',
      from: { path: '^renderer/' },
      to: { path: ELECTRON },
    },

    // ── server/ ──────────────────────────────────────────────────────────
    {
      name: 'server-only-common',
      comment:
        'server/ is a separate program: it may import common/ (plus npm and node builtins), never main/, native/, preload/ or renderer/.',
      severity: 'error',
      from: { path: '^server/' },
      to: { path: '^(main|native|preload|renderer|test|scripts|bench)/' },
    },
    {
      name: 'server-no-electron',
      comment: 'server/ never needs electron.',
      severity: 'error',
      from: { path: '^server/' },
      to: { path: ELECTRON },
    },

    // ── native npm modules ───────────────────────────────────────────────
    {
      name: 'native-modules-only-in-native',
      comment:
        'Native npm modules are imported by native/ only (one small interface each). Exception: server/ may use better-sqlite3 (see the header).',
      severity: 'error',
      from: { path: '^(common|main|preload|renderer)/' },
      to: { path: NATIVE_MODULES },
    },
    {
      name: 'server-native-modules-only-sqlite',
      comment: 'server/ may import better-sqlite3, no other native module.',
      severity: 'error',
      from: { path: '^server/' },
      to: { path: NATIVE_MODULES_BUT_SQLITE },
    },

    {
      name: 'server-only-deps',
      comment:
        'fastify, @fastify/*, @node-rs/argon2 and prom-client belong to the signaling server; electron-builder.yml leaves them out of the desktop package.',
      severity: 'error',
      from: { path: '^(common|native|main|preload|renderer)/' },
      to: { path: '(^|node_modules/)(fastify|@fastify/[^/]+|@node-rs/argon2|prom-client)(/|$)' },
    },

    // ── hygiene ──────────────────────────────────────────────────────────
    {
      name: 'not-to-unresolvable',
      comment:
        'An import that cannot be resolved is a typo or a missing dependency. Native modules are exempt: native/ loads them lazily and reports a missing one clearly.',
      severity: 'error',
      from: {},
      to: { couldNotResolve: true, pathNot: NATIVE_MODULES },
    },
    {
      name: 'not-to-dev-dep',
      comment:
        'Shipped code must not import devDependencies (they are absent from the package). electron is the exception: Electron provides it at run time; the renderer bundles its own.',
      severity: 'error',
      from: { path: '^(common|native|main|preload|server)/' },
      to: { dependencyTypes: ['npm-dev'], pathNot: [ELECTRON], dependencyTypesNot: ['type-only'] },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    exclude: { path: '^(out|dist)/' },
    tsPreCompilationDeps: true,
    combinedDependencies: false,
    enhancedResolveOptions: {
      exportsFields: ['exports'],
      conditionNames: ['import', 'require', 'node', 'default', 'types'],
      mainFields: ['module', 'main', 'types', 'typings'],
      extensions: ['.ts', '.d.ts', '.js', '.mjs', '.cjs', '.svelte', '.json'],
    },
    reporterOptions: { text: { highlightFocused: true } },
  },
};
