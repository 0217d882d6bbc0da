// Validate a firestore.indexes.json with firebase-tools' own checks, offline.
//
//   node scripts/validate-firestore-indexes.cjs FIREBASE_TOOLS_PREFIX [SPEC.json]
//
// FIREBASE_TOOLS_PREFIX is where `npm install --prefix` put firebase-tools (see scripts/ci-tools.sh);
// SPEC.json defaults to standard input. Exit status 0 when `FirestoreApi().validateSpec` accepts the
// spec, 1 with its message on stderr when it rejects it, 2 for bad usage or a missing install.
"use strict";
const fs = require("fs");
const path = require("path");

const [prefix, specPath] = process.argv.slice(2);
if (!prefix) {
  console.error("usage: validate-firestore-indexes.cjs FIREBASE_TOOLS_PREFIX [SPEC.json]");
  process.exit(2);
}
const apiPath = path.join(prefix, "node_modules", "firebase-tools", "lib", "firestore", "api.js");
if (!fs.existsSync(apiPath)) {
  console.error(`firebase-tools is not installed in ${prefix} (run scripts/ci-tools.sh firebase-tools)`);
  process.exit(2);
}
const { FirestoreApi } = require(apiPath);

let spec;
try {
  spec = JSON.parse(fs.readFileSync(specPath || 0, "utf8"));
} catch (err) {
  console.error(`not JSON: ${err.message}`);
  process.exit(1);
}
try {
  new FirestoreApi().validateSpec(spec);
} catch (err) {
  console.error(`rejected: ${err.message}`);
  process.exit(1);
}
console.log("firebase-tools accepts the spec");
