// Validates prometheus-operator custom resources against the CRD schemas that
// @kubernetes-models/prometheus-operator generates from the upstream CRDs (see package.json):
//  1. the package's JSON-schema validators (types, required fields, enums, patterns);
//  2. unknown fields, which those validators let through (as a CRD's pruning would), against the
//     package's TypeScript types of the same CRDs, with TypeScript's excess-property checks.
// stdin: a JSON array of objects; stdout: a JSON array of {kind, name, errors}; exit 0.
// A kind the package does not know is reported as an error, never skipped.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import ts from "typescript";

const here = fileURLToPath(new URL(".", import.meta.url));
const objects = JSON.parse(readFileSync(0, "utf8"));
const results = [];
const typed = [];

for (const [i, obj] of objects.entries()) {
  const [group, version] = String(obj.apiVersion).split("/");
  const name = obj.metadata?.name ?? "";
  const path = `@kubernetes-models/prometheus-operator/${group}/${version}/${obj.kind}`;
  let errors = [];
  try {
    const module = await import(path);
    new module[obj.kind](obj).validate();
    typed.push({ i, path, kind: obj.kind, obj });
  } catch (err) {
    errors = Array.isArray(err?.errors)
      ? err.errors.map((e) => `${e.instancePath || "/"} ${e.message}`)
      : [String(err?.message ?? err)];
  }
  results.push({ kind: obj.kind, name, errors });
}

if (typed.length) {
  const imports = typed.map((t, n) => `import type { I${t.kind} as T${n} } from "${t.path}";`);
  const checks = typed.map((t, n) => `export const o${n}: T${n} = ${JSON.stringify(t.obj)};`);
  const dir = mkdtempSync(join(here, ".check-"));
  const file = join(dir, "objects.ts");
  writeFileSync(file, [...imports, ...checks].join("\n"));
  try {
    const program = ts.createProgram([file], {
      noEmit: true, strict: true, lib: ["lib.es2020.d.ts"], types: [], skipLibCheck: true,
      module: ts.ModuleKind.ESNext, moduleResolution: ts.ModuleResolutionKind.Bundler,
    });
    for (const d of ts.getPreEmitDiagnostics(program)) {
      if (!d.file || d.file.fileName !== file) continue;
      const line = d.file.getLineAndCharacterOfPosition(d.start ?? 0).line;
      const text = d.file.text.split("\n")[line] ?? "";
      const match = /^export const o(\d+):/.exec(text);
      const message = ts.flattenDiagnosticMessageText(d.messageText, " ");
      if (match) {
        results[typed[Number(match[1])].i].errors.push(message);
      } else {
        throw new Error(`type check setup: ${message}`);
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
process.stdout.write(JSON.stringify(results));
