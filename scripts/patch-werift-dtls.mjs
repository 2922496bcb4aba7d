/* eslint-disable no-regex-spaces -- the patterns match the exact indentation of werift's generated code */
// Applies Parley's DTLS handshake-authentication fix to an unpacked werift
// (every copy of its DTLS code: the CommonJS files under lib/ and the three ESM
// bundles). Used once per werift version to regenerate
// patches/werift+<version>.patch with `npx patch-package werift`; `npm ci`
// applies that patch, not this script. It refuses to run on sources it does not
// recognise, so a werift upgrade that moved the code fails loudly here.
//
// What the fix does (RFC 5246 §7.4.3, §7.4.8, §7.4.9; RFC 8422 §5.4; RFC 6347
// §4.2.6; RFC 8827 §6.5):
// - the client verifies the ServerKeyExchange signature with the public key of
//   the server's certificate before it sends its own flight;
// - the server verifies the client's CertificateVerify with the public key of
//   the client's certificate, and does not complete without it when it
//   requested a certificate;
// - both verify the peer's Finished verify_data;
// - a failure sends a fatal alert, stops the handshake for good and is reported
//   as an Error with code ERR_DTLS_HANDSHAKE_AUTH, kept on
//   RTCDtlsTransport.handshakeFailure;
// - RTCDtlsTransport.srtpKeyMixer, when set, turns the DTLS-SRTP keys (RFC 5764
//   §4.2) into the keys SRTP uses ({localKey, localSalt, remoteKey, remoteSalt},
//   role → same shape): Parley mixes in the secret its sealed offer and answer
//   carry. A mixer that throws fails the transport (fail closed).
//
// Usage: node scripts/patch-werift-dtls.mjs [node_modules/werift]
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

const root = process.argv[2] ?? 'node_modules/werift';
const MARK = 'Parley patch';

function edit(file, steps) {
  const path = join(root, file);
  let text = readFileSync(path, 'utf8');
  if (text.includes(MARK)) {
    console.log(`${file}: already patched`);
    return;
  }
  for (const [what, from, to] of steps) {
    const matches = typeof from === 'string' ? text.split(from).length - 1 : [...text.matchAll(new RegExp(from, 'g'))].length;
    if (matches !== 1) throw new Error(`${file}: ${what}: expected exactly one match, found ${matches}`);
    text = text.replace(from, to);
  }
  writeFileSync(path, text);
  console.log(`${file}: patched`);
}

// ---- shared pieces ---------------------------------------------------------------

/** The verification helpers (module scope). `X509Certificate`, `verify`, `timingSafeEqual` from node:crypto. */
const helpers = (x509, verify, equal) => `
// ${MARK} (RFC 5246 §7.4.3/§7.4.8/§7.4.9, RFC 8827 §6.5): handshake authentication.
function parleyDtlsAuthError(message, alert) {
  const error = new Error("DTLS handshake not authenticated: " + message);
  error.code = "ERR_DTLS_HANDSHAKE_AUTH";
  error.alert = alert;
  return error;
}
function parleyVerifyHandshakeSignature(certificate, signatureAlgorithm, data, signature, what) {
  if (!certificate || certificate.length === 0) throw parleyDtlsAuthError(what + ": the peer sent no certificate", 42);
  let key;
  try {
    key = new ${x509}(certificate).publicKey;
  } catch (e) {
    throw parleyDtlsAuthError(what + ": the peer's certificate cannot be parsed", 42);
  }
  const type = key.asymmetricKeyType;
  if (!((signatureAlgorithm === 3 && type === "ec") || (signatureAlgorithm === 1 && type === "rsa"))) {
    throw parleyDtlsAuthError(what + ": signature algorithm " + signatureAlgorithm + " does not fit the certificate's " + type + " key", 47);
  }
  let ok = false;
  try {
    ok = ${verify}("sha256", data, key, signature);
  } catch (e) {
    ok = false;
  }
  if (!ok) throw parleyDtlsAuthError(what + ": the signature was not made with the key of the peer's certificate", 51);
}
function parleySignatureSchemeAlgorithm(scheme) {
  switch (scheme) {
    case 0x0401: return 1; // rsa_pkcs1_sha256
    case 0x0403: return 3; // ecdsa_secp256r1_sha256
  }
  throw parleyDtlsAuthError("CertificateVerify uses signature scheme " + scheme + ", which was not offered", 47);
}
function parleyEqual(a, b) {
  return !!a && !!b && a.length === b.length && ${equal}(a, b);
}
`;

/** CipherContext methods (class body). `verifyClient`/`verifyServer` are the PRF functions in scope. */
const cipherMethods = (sessionClient, verifyClient, verifyServer) => `
  /** ${MARK}: the stored ServerKeyExchange must be signed by the server certificate's key (RFC 8422 §5.4). */
  verifyServerKeyExchange() {
    const m = this.remoteKeyExchange;
    if (!m) throw parleyDtlsAuthError("no ServerKeyExchange was received", 10);
    if (m.hashAlgorithm !== 4) throw parleyDtlsAuthError("ServerKeyExchange hash " + m.hashAlgorithm + " was not offered", 47);
    const data = this.valueKeySignature(this.localRandom.serialize(), this.remoteRandom.serialize(), m.publicKey, m.namedCurve);
    parleyVerifyHandshakeSignature(this.remoteCertificate, m.signatureAlgorithm, data, m.signature, "ServerKeyExchange");
  }
  /** ${MARK}: the stored CertificateVerify must sign \`handshakeMessages\` with the client certificate's key (RFC 5246 §7.4.8). */
  verifyCertificateVerify(handshakeMessages) {
    const m = this.remoteCertificateVerify;
    if (!m) throw parleyDtlsAuthError("no CertificateVerify was received", 10);
    parleyVerifyHandshakeSignature(this.remoteCertificate, parleySignatureSchemeAlgorithm(m.algorithm), handshakeMessages, m.signature, "CertificateVerify");
  }
  /** ${MARK}: the peer's Finished.verify_data over \`handshakeMessages\` (RFC 5246 §7.4.9). */
  verifyRemoteFinished(verifyData, handshakeMessages) {
    const expected = this.sessionType === ${sessionClient}
      ? ${verifyServer}(this.masterSecret, handshakeMessages)
      : ${verifyClient}(this.masterSecret, handshakeMessages);
    if (!parleyEqual(verifyData, expected)) throw parleyDtlsAuthError("the peer's Finished does not match the handshake", 51);
  }`;

/** DtlsSocket: the sticky failure and the fatal alert. */
const socketMethods = (createPlaintext, Alert) => `
  /** ${MARK}: sends a fatal alert (RFC 5246 §7.2) after a failed handshake; best effort. */
  sendFatalAlert(description) {
    try {
      const [packet] = ${createPlaintext}(this.dtls)(
        [{ type: 21, fragment: new ${Alert}(2, description).serialize() }],
        ++this.dtls.recordSequenceNumber
      );
      const buf = this.dtls.epoch > 0 && this.cipher.cipher ? this.cipher.encryptPacket(packet).serialize() : packet.serialize();
      Promise.resolve(this.transport.send(buf)).catch(() => {});
    } catch (e) {
      // nothing more to do: the handshake has failed either way
    }
  }`;

const socketCatch = (prefix) => `${prefix}
                  // ${MARK}: a failed handshake stays failed; an unauthenticated one says so to the peer.
                  if (!this.handshakeError) {
                    this.handshakeError = error;
                    if (error && error.code === "ERR_DTLS_HANDSHAKE_AUTH") this.sendFatalAlert(error.alert ?? 40);
                  }`;

const fatalAlert = (prefix) => `${prefix}
                  // ${MARK}: a fatal alert during the handshake ends it (RFC 5246 §7.2.2); werift only logged it.
                  if (error && error.message === "alert fatal error" && !this.connected && !this.handshakeError) {
                    this.handshakeError = Object.assign(new Error("the peer ended the DTLS handshake with a fatal alert"), { code: "ERR_DTLS_ALERT" });
                    this.onError.execute(this.handshakeError);
                  }`;

const mixer = (extract, indent) => `${indent}// ${MARK}: the SRTP master keys may be bound to a secret the DTLS handshake does not carry.
${indent}let parleyKeys = ${extract};
${indent}if (this.srtpKeyMixer) {
${indent}  try {
${indent}    parleyKeys = this.srtpKeyMixer(parleyKeys, this.role);
${indent}  } catch (error) {
${indent}    this.handshakeFailure = error;
${indent}    this.setState("failed");
${indent}    throw error;
${indent}  }
${indent}}
${indent}const { localKey, localSalt, remoteKey, remoteSalt } = parleyKeys;`;

const cacheBytes = (filter) => `Buffer.concat(this.dtls.sortedHandshakeCache${filter}.map((v) => v.serialize()))`;

// ---- ESM bundles ---------------------------------------------------------------

function esm(file) {
  edit(file, [
    ['crypto import + helpers', /\nvar CipherContext = class \{/, `\nimport { X509Certificate as ParleyX509Certificate, verify as parleyVerify, timingSafeEqual as parleyTimingSafeEqual } from "crypto";${helpers('ParleyX509Certificate', 'parleyVerify', 'parleyTimingSafeEqual')}var CipherContext = class {`],
    [
      'CipherContext methods',
      /\n  verifyData\(buf\) \{\n    if \(this\.sessionType === SessionType\.CLIENT\)\n      return prfVerifyDataClient\(this\.masterSecret, buf\);\n    else return prfVerifyDataServer\(this\.masterSecret, buf\);\n  \}/,
      (m) => m + cipherMethods('SessionType.CLIENT', 'prfVerifyDataClient', 'prfVerifyDataServer'),
    ],
    [
      'ServerKeyExchange kept',
      /(handlers\[12 \/\* server_key_exchange_12 \*\/\] = \(\{ cipher, dtls \}\) => \(message\) => \{\n)/,
      `$1  cipher.remoteKeyExchange = message; // ${MARK}: verified before flight 5\n`,
    ],
    [
      'CertificateVerify kept',
      /(  log\d+\(dtls\.sessionId, "certificate_verify", message\.algorithm\);\n)/,
      `$1  cipher.remoteCertificateVerify = message; // ${MARK}: verified before flight 6\n`,
    ],
    ['socket fields', /\n  bufferFragmentedHandshakes = \[\];\n  renegotiation\(\) \{/, `\n  bufferFragmentedHandshakes = [];\n  handshakeError; // ${MARK}${socketMethods('createPlaintext', 'Alert')}\n  renegotiation() {`],
    ['socket catch', /( *err\d+\(this\.dtls\.sessionId, "onHandleHandshakes error", error\);)/, (m) => socketCatch(m)],
    ['fatal alert', /( *err\d+\(this\.dtls\.sessionId, "catch udpOnMessage error", error\);)/, (m) => fatalAlert(m)],
    [
      'client gate',
      /(var DtlsClient = class extends DtlsSocket \{[\s\S]*?handleHandshakes = async \(assembled\) => \{\n)/,
      `$1    if (this.handshakeError) return; // ${MARK}\n`,
    ],
    [
      'client verifies ServerKeyExchange',
      /(            await this\.waitForReady\(\n              \(\) => this\.dtls\.checkHandshakesExist\(targets\)\n            \);\n)(            await this\.flight5\?\.exec\(\);)/,
      `$1            this.cipher.verifyServerKeyExchange(); // ${MARK}\n$2`,
    ],
    [
      'client verifies Finished',
      /(        case 20 \/\* finished_20 \*\/:\n          \{\n)(            this\.dtls\.flight = 7;)/,
      `$1            // ${MARK}: the server's Finished covers every handshake message up to ours.\n            this.cipher.verifyRemoteFinished(Finished.deSerialize(handshake.fragment).verifyData, ${cacheBytes('')});\n$2`,
    ],
    [
      'server gate',
      /(var DtlsServer = class extends DtlsSocket \{[\s\S]*?handleHandshakes = async \(assembled\) => \{\n)/,
      `$1    if (this.handshakeError) return; // ${MARK}\n`,
    ],
    [
      'server verifies CertificateVerify and Finished',
      /(            await this\.waitForReady\(\n              \(\) => this\.dtls\.checkHandshakesExist\(requiredHandshakes\)\n            \);\n)(            await this\.flight6\?\.exec\(\);)/,
      `$1            // ${MARK}: CertificateVerify signs every message before it; Finished every message before it.\n` +
        `            if (this.options.certificateRequest) {\n` +
        `              const all = this.dtls.sortedHandshakeCache;\n` +
        `              const at = all.findIndex((h) => h.msg_type === 15);\n` +
        `              this.cipher.verifyCertificateVerify(Buffer.concat(all.slice(0, at).map((v) => v.serialize())));\n` +
        `            }\n` +
        `            this.cipher.verifyRemoteFinished(Finished.deSerialize(handshake.fragment).verifyData, ${cacheBytes('.filter((h) => h.msg_type !== 20)')});\n$2`,
    ],
    [
      'transport keeps the failure',
      /(      this\.dtls\.onError\.once\(\(error\) => \{\n)(        this\.setState\("failed"\);)/,
      `$1        this.handshakeFailure = error; // ${MARK}\n$2`,
    ],
    [
      'SRTP key mixer',
      '    const { localKey, localSalt, remoteKey, remoteSalt } = this.dtls.extractSessionKeys(keyLength(profile), saltLength(profile));',
      mixer('this.dtls.extractSessionKeys(keyLength(profile), saltLength(profile))', '    '),
    ],
  ]);
}

// ---- CommonJS files ------------------------------------------------------------

function cjs() {
  const d = 'lib/dtls/src/';
  edit(d + 'context/cipher.js', [
    ['helpers', /\nclass CipherContext \{/, `${helpers('crypto_1.X509Certificate', 'crypto_1.verify', 'crypto_1.timingSafeEqual')}class CipherContext {`],
    [
      'methods',
      /\n    verifyData\(buf\) \{\n        if \(this\.sessionType === abstract_1\.SessionType\.CLIENT\)\n            return \(0, prf_1\.prfVerifyDataClient\)\(this\.masterSecret, buf\);\n        else\n            return \(0, prf_1\.prfVerifyDataServer\)\(this\.masterSecret, buf\);\n    \}/,
      (m) => m + cipherMethods('abstract_1.SessionType.CLIENT', '(0, prf_1.prfVerifyDataClient)', '(0, prf_1.prfVerifyDataServer)'),
    ],
  ]);
  edit(d + 'flight/client/flight5.js', [
    [
      'ServerKeyExchange kept',
      /(handlers\[const_2\.HandshakeType\.server_key_exchange_12\] =\n    \(\{ cipher, dtls \}\) => \(message\) => \{\n)/,
      `$1        cipher.remoteKeyExchange = message; // ${MARK}: verified before flight 5\n`,
    ],
  ]);
  edit(d + 'flight/server/flight6.js', [
    [
      'CertificateVerify kept',
      /(        log\(dtls\.sessionId, "certificate_verify", message\.algorithm\);\n)/,
      `$1        cipher.remoteCertificateVerify = message; // ${MARK}: verified before flight 6\n`,
    ],
  ]);
  edit(d + 'socket.js', [
    ['alert import', 'const receive_1 = require("./record/receive");', `const receive_1 = require("./record/receive");\nconst parleyAlert_1 = require("./handshake/message/alert"); // ${MARK}`],
    ['catch', /( *err\(this\.dtls\.sessionId, "onHandleHandshakes error", error\);)/, (m) => socketCatch(m)],
    ['fatal alert', /( *err\(this\.dtls\.sessionId, "catch udpOnMessage error", error\);)/, (m) => fatalAlert(m)],
    [
      'methods',
      /\n    renegotiation\(\) \{/,
      `${socketMethods('(0, builder_1.createPlaintext)', 'parleyAlert_1.Alert')}\n    renegotiation() {`,
    ],
  ]);
  edit(d + 'client.js', [
    ['finished import', 'const helloVerifyRequest_1 = require("./handshake/message/server/helloVerifyRequest");', `const helloVerifyRequest_1 = require("./handshake/message/server/helloVerifyRequest");\nconst parleyFinished_1 = require("./handshake/message/finished"); // ${MARK}`],
    ['gate', /(            value: async \(assembled\) => \{\n)/, `$1                if (this.handshakeError) return; // ${MARK}\n`],
    [
      'verifies ServerKeyExchange',
      /(                                await this\.waitForReady\(\(\) => this\.dtls\.checkHandshakesExist\(targets\)\);\n)/,
      `$1                                this.cipher.verifyServerKeyExchange(); // ${MARK}\n`,
    ],
    [
      'verifies Finished',
      /(                        case const_1\.HandshakeType\.finished_20:\n                            \{\n)/,
      `$1                                this.cipher.verifyRemoteFinished(parleyFinished_1.Finished.deSerialize(handshake.fragment).verifyData, ${cacheBytes('')}); // ${MARK}\n`,
    ],
  ]);
  edit(d + 'server.js', [
    ['finished import', 'const hello_1 = require("./handshake/message/client/hello");', `const hello_1 = require("./handshake/message/client/hello");\nconst parleyFinished_1 = require("./handshake/message/finished"); // ${MARK}`],
    ['gate', /(            value: async \(assembled\) => \{\n)/, `$1                if (this.handshakeError) return; // ${MARK}\n`],
    [
      'verifies CertificateVerify and Finished',
      /(                                await this\.waitForReady\(\(\) => this\.dtls\.checkHandshakesExist\(requiredHandshakes\)\);\n)/,
      `$1                                // ${MARK}: CertificateVerify signs every message before it; Finished every message before it.\n` +
        `                                if (this.options.certificateRequest) {\n` +
        `                                    const all = this.dtls.sortedHandshakeCache;\n` +
        `                                    const at = all.findIndex((h) => h.msg_type === 15);\n` +
        `                                    this.cipher.verifyCertificateVerify(Buffer.concat(all.slice(0, at).map((v) => v.serialize())));\n` +
        `                                }\n` +
        `                                this.cipher.verifyRemoteFinished(parleyFinished_1.Finished.deSerialize(handshake.fragment).verifyData, ${cacheBytes('.filter((h) => h.msg_type !== 20)')});\n`,
    ],
  ]);
  edit('lib/webrtc/src/transport/dtls.js', [
    [
      'transport keeps the failure',
      /(            this\.dtls\.onError\.once\(\(error\) => \{\n)/,
      `$1                this.handshakeFailure = error; // ${MARK}\n`,
    ],
    [
      'SRTP key mixer',
      '        const { localKey, localSalt, remoteKey, remoteSalt } = this.dtls.extractSessionKeys((0, rtp_1.keyLength)(profile), (0, rtp_1.saltLength)(profile));',
      mixer('this.dtls.extractSessionKeys((0, rtp_1.keyLength)(profile), (0, rtp_1.saltLength)(profile))', '        '),
    ],
  ]);
}

cjs();
for (const f of ['lib/index.mjs', 'lib/polyfill/index.mjs', 'lib/polyfill/dom.mjs']) esm(f);
