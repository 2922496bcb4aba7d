/**
 * Lazy loading of native (N-API) modules with an error that says what to
 * install. Only `native/` loads native modules; each module calls
 * {@link loadNativeModule} on first use, never at import time, so that a
 * missing system library breaks only the feature that needs it.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

// Not named `require`: the Electron build (electron-vite) puts a `require` shim at the top of each chunk it emits,
// and this module lands in the chunk the app and its media worker share.
const requireHere = createRequire(import.meta.url);

/** How to find and explain one native npm package. */
export interface NativeModuleSpec {
  /** npm package name, e.g. `@github/keytar`. */
  packageName: string;
  /** What the module is for, in the user's words, e.g. "the OS keychain". */
  purpose: string;
  /**
   * `.node` files relative to the package root, tried with `process.dlopen`
   * when `require` fails, because some packages (keytar) swallow the loader's
   * error and we want the real "libX.so: cannot open shared object file".
   */
  addonPaths?: readonly string[];
  /** Shared library soname → Debian/Ubuntu package that provides it. */
  systemLibraries?: Readonly<Record<string, string>>;
}

/**
 * A native module could not be loaded. `missingLibrary` is the shared library
 * the dynamic loader could not find, when that was the cause.
 */
export class NativeModuleLoadError extends Error {
  readonly code = 'native_module_unavailable';
  override readonly name = 'NativeModuleLoadError';
  constructor(
    message: string,
    readonly packageName: string,
    readonly missingLibrary: string | undefined,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/**
 * The shared library named in a dynamic loader error
 * ("libsecret-1.so.0: cannot open shared object file: No such file or directory"),
 * or undefined.
 */
export function missingLibraryOf(loaderMessage: string): string | undefined {
  const m = /([\w.+-]+\.so(?:\.[\w.]+)?): cannot open shared object file/.exec(loaderMessage);
  return m?.[1];
}

/**
 * Turns a loader failure into a {@link NativeModuleLoadError} whose message
 * names the missing library and, when known, the package that provides it:
 * "libsecret-1.so.0 missing: install libsecret-1-0 (needed by @github/keytar for the OS keychain)".
 */
export function explainLoadFailure(spec: NativeModuleSpec, error: unknown): NativeModuleLoadError {
  const detail = error instanceof Error ? error.message : String(error);
  const library = missingLibraryOf(detail);
  const needed = `needed by ${spec.packageName} for ${spec.purpose}`;
  if (library) {
    const pkg = spec.systemLibraries?.[library];
    const fix = pkg ? `install ${pkg}` : 'install the system package that provides it';
    return new NativeModuleLoadError(
      `${library} missing: ${fix} (${needed})`,
      spec.packageName,
      library,
      {
        cause: error,
      },
    );
  }
  return new NativeModuleLoadError(
    `${spec.packageName} could not be loaded (${needed}): ${detail.split('\n')[0]}`,
    spec.packageName,
    undefined,
    { cause: error },
  );
}

/**
 * `require`s a native package; on failure, retries its `.node` files with
 * `process.dlopen` to recover the loader's own message, and throws
 * {@link explainLoadFailure}'s error.
 * @throws NativeModuleLoadError
 */
export function loadNativeModule<T>(spec: NativeModuleSpec): T {
  try {
    return requireHere(spec.packageName) as T;
  } catch (requireError) {
    let cause: unknown = requireError;
    const root = packageRoot(spec.packageName);
    for (const rel of root ? (spec.addonPaths ?? []) : []) {
      try {
        process.dlopen({ exports: {} }, join(root!, rel));
      } catch (dlopenError) {
        const message = dlopenError instanceof Error ? dlopenError.message : '';
        if (!/No such file or directory$/.test(message) || missingLibraryOf(message)) {
          cause = dlopenError;
          if (missingLibraryOf(message)) break;
        }
      }
    }
    throw explainLoadFailure(spec, cause);
  }
}

function packageRoot(packageName: string): string | undefined {
  try {
    return dirname(requireHere.resolve(`${packageName}/package.json`));
  } catch {
    return undefined;
  }
}

/** One of Parley's own N-API addons, `native/<dir>/addon`, built by scripts/setup.sh or `npm run build:native`. */
export interface OwnAddonSpec extends NativeModuleSpec {
  /** Its folder under native/, e.g. `apm`. */
  dir: string;
  /** node-gyp's target name (the `.node` file's), e.g. `parley_apm`. */
  target: string;
  /** The environment variable that may name the `.node` file instead, e.g. `PARLEY_APM_ADDON`. */
  envVar: string;
  /** What it is, as the start of "… is not built", e.g. "Parley's voice processing addon". */
  title: string;
  /** The Debian package its build needs, when it needs one, e.g. `libwebrtc-audio-processing-dev`. */
  buildPackage?: string;
}

/** Where node-gyp puts an addon, relative to the repository (or the app's) root. */
export function ownAddonFile(spec: OwnAddonSpec): string {
  return join('native', spec.dir, 'addon', 'build', 'Release', `${spec.target}.node`);
}

/**
 * Where an addon may be, most specific first: the file its environment
 * variable names; beside the module at `moduleUrl` (its `native/<dir>/index.ts`,
 * running from source); the root seen from a bundle in `out/main/` or
 * `out/cli/`; Electron's `app.asar.unpacked` (a shared object cannot load from
 * inside an asar: electron-builder must `asarUnpack` it).
 */
export function ownAddonPaths(spec: OwnAddonSpec, moduleUrl: string): string[] {
  const here = dirname(fileURLToPath(moduleUrl));
  const resources = (process as { resourcesPath?: string }).resourcesPath;
  const file = ownAddonFile(spec);
  const named = process.env[spec.envVar];
  return [
    ...(named ? [named] : []),
    join(here, 'addon', 'build', 'Release', `${spec.target}.node`),
    join(here, '..', '..', file),
    ...(resources ? [join(resources, 'app.asar.unpacked', file)] : []),
  ];
}

/**
 * Loads an addon from the first of `candidates` that exists.
 * @throws NativeModuleLoadError "<title> is not built (<file> missing): run
 *   scripts/setup.sh or npm run build:native (needs <package>)" when none
 *   exists, or {@link explainLoadFailure}'s (the missing system library and
 *   its package) when it does not load.
 */
export function loadOwnAddon<T>(spec: OwnAddonSpec, candidates: readonly string[]): T {
  const path = candidates.find((p) => existsSync(p));
  if (path === undefined) {
    throw new NativeModuleLoadError(
      `${spec.title} is not built (${ownAddonFile(spec)} missing): run scripts/setup.sh or npm run build:native${spec.buildPackage ? ` (needs ${spec.buildPackage})` : ''}`,
      spec.packageName,
      undefined,
    );
  }
  try {
    return requireHere(path) as T;
  } catch (err) {
    throw explainLoadFailure(spec, err);
  }
}
