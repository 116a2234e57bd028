// Build-time workaround, loaded with `node --import ./preopen.mjs` before jco runs.
//
// jco runs wasm-tools (jco-transpile) and the componentize-js splicer as components on
// @bytecodealliance/preview2-shim. preview2-shim 0.26 starts with no filesystem preopens
// (0.25 preopened "/"), so reading the WIT directory fails with
// "failed to get path metadata ... (os error 44)". Give every copy of the shim those tools
// load a "/" preopen (the shim's module state is per copy, so each copy needs it).
import { existsSync, realpathSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));

// Node's node_modules lookup: the nearest `node_modules/<name>` at or above `from`.
function findPackage(name, from) {
  for (let dir = from; ; dir = dirname(dir)) {
    const candidate = join(dir, 'node_modules', name);
    if (existsSync(join(candidate, 'package.json'))) return realpathSync(candidate);
    if (dirname(dir) === dir) return null;
  }
}

const jco = findPackage('@bytecodealliance/jco', here);
const users = [
  jco,
  jco && findPackage('@bytecodealliance/jco-transpile', jco),
  jco && findPackage('@bytecodealliance/componentize-js', jco),
].filter(Boolean);

const shims = new Set();
for (const user of users) {
  const shim = findPackage('@bytecodealliance/preview2-shim', user);
  const fs = shim && join(shim, 'dist', 'nodejs', 'filesystem.js');
  if (fs && existsSync(fs)) shims.add(realpathSync(fs));
}

for (const file of shims) {
  const { preopens, _addPreopen } = await import(pathToFileURL(file).href);
  const hasRoot = preopens.getDirectories().some(([, path]) => path === '/');
  if (!hasRoot && typeof _addPreopen === 'function') _addPreopen('/', '/');
}
