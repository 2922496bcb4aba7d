import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  explainLoadFailure,
  loadNativeModule,
  missingLibraryOf,
  NativeModuleLoadError,
} from '../../native/load';

const keytarRoot = dirname(createRequire(import.meta.url).resolve('@github/keytar/package.json'));

describe('native module loading', () => {
  it('names the missing system library and its package when the loader cannot find it', () => {
    // The musl build of keytar needs libc.musl-x86_64.so.1, which a glibc system
    // lacks: a real dynamic-loader failure, the same as a missing libsecret-1.so.0.
    let loaderError: unknown;
    try {
      process.dlopen({ exports: {} }, join(keytarRoot, 'prebuilds/linuxmusl-x64/keytar.node'));
    } catch (err) {
      loaderError = err;
    }
    expect(loaderError).toBeInstanceOf(Error);
    const error = explainLoadFailure(
      {
        packageName: '@github/keytar',
        purpose: 'the OS keychain',
        systemLibraries: { 'libc.musl-x86_64.so.1': 'musl' },
      },
      loaderError,
    );
    expect(error).toBeInstanceOf(NativeModuleLoadError);
    expect(error.missingLibrary).toBe('libc.musl-x86_64.so.1');
    expect(error.message).toBe(
      'libc.musl-x86_64.so.1 missing: install musl (needed by @github/keytar for the OS keychain)',
    );
  });

  it('recognises the loader message for libsecret', () => {
    expect(
      missingLibraryOf(
        'libsecret-1.so.0: cannot open shared object file: No such file or directory',
      ),
    ).toBe('libsecret-1.so.0');
    expect(missingLibraryOf('/x/keytar.node: invalid ELF header')).toBeUndefined();
  });

  it('reports a package that is not installed at all', () => {
    expect(() =>
      loadNativeModule({ packageName: 'parley-no-such-native-module', purpose: 'testing' }),
    ).toThrow(
      /parley-no-such-native-module could not be loaded \(needed by parley-no-such-native-module for testing\)/,
    );
  });

  it('loads the real native modules on this machine', () => {
    expect(
      loadNativeModule<{ getPassword: unknown }>({ packageName: '@github/keytar', purpose: 'x' })
        .getPassword,
    ).toBeTypeOf('function');
    expect(
      loadNativeModule<{ OpusEncoder: unknown }>({ packageName: '@discordjs/opus', purpose: 'x' })
        .OpusEncoder,
    ).toBeTypeOf('function');
  });
});
