// ESLint flat config. Style is Prettier's job (.prettierrc.json; eslint-config-prettier
// is not installed, so no stylistic rules are turned on here). The layer rules of
// DESIGN.md are enforced by dependency-cruiser (.dependency-cruiser.cjs); both run in
// `npm run lint`.
import { readFileSync } from 'node:fs';
import js from '@eslint/js';
import svelte from 'eslint-plugin-svelte';
import globals from 'globals';
import tseslint from 'typescript-eslint';
import { defineConfig } from 'eslint/config';

/**
 * .gitignore's patterns as flat-config ignores (what @eslint/compat's
 * includeIgnoreFile does; that package is not installed): `/x` is anchored at
 * the root, `x` matches at any depth, negations are not supported.
 */
function gitignored() {
  return readFileSync(new URL('./.gitignore', import.meta.url), 'utf8')
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line && !line.startsWith('#') && !line.startsWith('!'))
    .map((line) => (line.startsWith('/') ? line.slice(1) : `**/${line}`));
}

/** Node's globals: code under common/ must run without them (DESIGN.md, "Layout"). */
const NODE_GLOBALS = [
  'process',
  'Buffer',
  'global',
  'require',
  'module',
  '__dirname',
  '__filename',
  'setImmediate',
];
/** The browser's globals: code under common/ must run without them too. */
const DOM_GLOBALS = [
  'window',
  'document',
  'navigator',
  'localStorage',
  'sessionStorage',
  'location',
  'HTMLElement',
];

const restricted = (names, why) => names.map((name) => ({ name, message: `${name}: ${why}` }));

export default defineConfig(
  {
    ignores: [
      ...gitignored(),
      // Deliberately broken imports for test/unit/layering.test.ts.
      'test/fixtures/layering/',
    ],
  },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  ...svelte.configs.recommended,
  ...svelte.configs.prettier,
  {
    languageOptions: {
      ecmaVersion: 2023,
      sourceType: 'module',
      globals: { ...globals.node },
    },
    rules: {
      '@typescript-eslint/no-unused-vars': [
        'error',
        { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrorsIgnorePattern: '^_' },
      ],
      eqeqeq: ['error', 'always', { null: 'ignore' }],
      'no-console': 'off',
    },
  },
  {
    files: ['**/*.cjs'],
    languageOptions: { sourceType: 'commonjs' },
    rules: { '@typescript-eslint/no-require-imports': 'off' },
  },
  {
    // common/ runs in main, renderer, server and browser tests: no Node, no DOM.
    files: ['common/**/*.ts'],
    languageOptions: { globals: {} },
    rules: {
      'no-restricted-globals': [
        'error',
        ...restricted(NODE_GLOBALS, 'common/ must not need Node (DESIGN.md, Layout)'),
        ...restricted(DOM_GLOBALS, 'common/ must not need the DOM (DESIGN.md, Layout)'),
      ],
    },
  },
  {
    // The renderer is a sandboxed browser page without Node.
    files: ['renderer/**/*.ts', 'renderer/**/*.svelte'],
    languageOptions: {
      globals: { ...globals.browser },
      parserOptions: { parser: tseslint.parser, extraFileExtensions: ['.svelte'] },
    },
    rules: {
      'no-restricted-globals': [
        'error',
        ...restricted(NODE_GLOBALS, 'the renderer has no Node; ask main through window.parley'),
      ],
    },
  },
  {
    // The sandboxed preload has only a small subset of Node.
    files: ['preload/**/*.ts'],
    languageOptions: { globals: { ...globals.browser } },
    rules: {
      'no-restricted-globals': [
        'error',
        ...restricted(
          ['Buffer', 'global', '__dirname', '__filename', 'setImmediate'],
          'not available in a sandboxed preload',
        ),
      ],
    },
  },
);
