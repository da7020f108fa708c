// Every flag a rendered manifest passes to one of our programs is a flag
// that program accepts: the container commands of deploy/k8s (base and
// overlays) against `<program> --helpfull` of the programs just built.
//
//   node check_flags.js NODE_DIR BIN_DIR RENDERED.yaml...
//
// Prints one line per unknown flag (file, object, container, flag) and
// exits 1 when there is any; 0 otherwise.
'use strict';
const fs = require('fs');
const path = require('path');
const {execFileSync} = require('child_process');

const [nodeDir, binDir, ...files] = process.argv.slice(2);
const yaml = require(path.resolve(nodeDir, 'node_modules', 'js-yaml'));

const known = new Map();  // program -> Set of flag names
function flagsOf(program) {
  if (!known.has(program)) {
    const exe = path.join(binDir, program);
    let help = '';
    try {
      help = execFileSync(exe, ['--helpfull'], {encoding: 'utf8'});
    } catch (e) {
      // Abseil exits 1 after printing --helpfull.
      help = (e.stdout || '') + (e.stderr || '');
    }
    known.set(program, new Set([...help.matchAll(/^\s+--([A-Za-z0-9_]+)/gm)]
                                 .map((m) => m[1])));
  }
  return known.get(program);
}

let problems = 0;
let checked = 0;
for (const file of files) {
  for (const doc of yaml.loadAll(fs.readFileSync(file, 'utf8'))) {
    const spec = doc && doc.spec && doc.spec.template && doc.spec.template.spec;
    if (!spec) continue;
    for (const c of [...(spec.initContainers || []), ...spec.containers]) {
      const argv = [...(c.command || []), ...(c.args || [])];
      const program = path.basename(argv[0] || '');
      if (!fs.existsSync(path.join(binDir, program))) {
        console.log(`${file}: ${doc.kind}/${doc.metadata.name} container ` +
                    `${c.name}: runs "${program}", which is not one of ours`);
        ++problems;
        continue;
      }
      const flags = flagsOf(program);
      for (const arg of argv.slice(1)) {
        const m = /^--([A-Za-z0-9_]+)/.exec(arg);
        if (!m) continue;
        ++checked;
        if (!flags.has(m[1]) && !(m[1].startsWith('no') && flags.has(m[1].slice(2)))) {
          console.log(`${file}: ${doc.kind}/${doc.metadata.name} container ` +
                      `${c.name}: ${program} has no flag --${m[1]}`);
          ++problems;
        }
      }
    }
  }
}
if (problems > 0) process.exit(1);
console.log(`OK: ${checked} flags in ${files.length} rendered manifests`);
