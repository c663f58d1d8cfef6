// Writes oclif.manifest.json (every command's flags and help, so the CLI starts without
// importing each command to list them) at pack time: `npm pack` / `npm publish` run it as
// prepack, and postpack removes it again. What `oclif manifest` does, without that package.
import { writeFileSync, rmSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Plugin } from '@oclif/core';

const root = fileURLToPath(new URL('..', import.meta.url));
const file = fileURLToPath(new URL('../oclif.manifest.json', import.meta.url));
if (process.argv[2] === 'clean') {
  rmSync(file, { force: true });
} else {
  // The options `oclif manifest` (oclif 4) passes: build from the commands, never from an old
  // manifest, fail on a command that does not load, keep defaults marked noCacheDefault out.
  const plugin = new Plugin({ root, type: 'core', ignoreManifest: true, errorOnManifestCreate: true, respectNoCacheDefault: true });
  await plugin.load();
  writeFileSync(file, JSON.stringify(plugin.manifest, null, 2) + '\n');
  console.error(`oclif.manifest.json: ${Object.keys(plugin.manifest.commands).length} commands`);
}
