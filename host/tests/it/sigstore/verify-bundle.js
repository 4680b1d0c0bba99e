// Verifies a keyed Sigstore bundle offline with the Sigstore project's own
// verifier (@sigstore/bundle parses and checks the bundle's structure,
// @sigstore/verify checks the DSSE signature against the key given), the
// way `cosign verify-attestation --key K --insecure-ignore-tlog` does:
// no transparency log, no timestamp, any key hint.
//
//   node verify-bundle.js BUNDLE.json PUBLIC_KEY.pem sha256:DIGEST
//
// Exit 0, printing the statement's predicate type, when the bundle
// verifies and its in-toto statement names DIGEST as a subject; exit 1
// with the reason otherwise.
'use strict';
const crypto = require('crypto');
const fs = require('fs');
const { bundleFromJSON } = require('@sigstore/bundle');
const { Verifier, toSignedEntity, toTrustMaterial } = require('@sigstore/verify');

const [bundlePath, keyPath, digest] = process.argv.slice(2);
try {
  const bundle = bundleFromJSON(JSON.parse(fs.readFileSync(bundlePath, 'utf8')));
  if (bundle.content.$case !== 'dsseEnvelope') {
    throw new Error(`the bundle holds a ${bundle.content.$case}, not a DSSE envelope`);
  }
  const key = crypto.createPublicKey(fs.readFileSync(keyPath, 'utf8'));
  const noAuthorities = {
    certificateAuthorities: [],
    timestampAuthorities: [],
    tlogs: [],
    ctlogs: [],
  };
  const trust = toTrustMaterial(noAuthorities, () => ({ publicKey: key, validFor: () => true }));
  new Verifier(trust, { tlogThreshold: 0, ctlogThreshold: 0, timestampThreshold: 0 }).verify(
    toSignedEntity(bundle),
  );
  const envelope = bundle.content.dsseEnvelope;
  if (envelope.payloadType !== 'application/vnd.in-toto+json') {
    throw new Error(`the payload is ${envelope.payloadType}, not an in-toto statement`);
  }
  const statement = JSON.parse(envelope.payload.toString('utf8'));
  const hex = digest.replace(/^sha256:/, '');
  if (!statement.subject.some((s) => s.digest && s.digest.sha256 === hex)) {
    throw new Error(`the statement is not about ${digest}`);
  }
  console.log(statement.predicateType);
} catch (e) {
  console.error(`${e.code || e.name}: ${e.message}`);
  process.exit(1);
}
