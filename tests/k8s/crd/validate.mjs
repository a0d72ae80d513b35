// Validates prometheus-operator custom resources against the CRD schemas that
// @kubernetes-models/prometheus-operator generates from the upstream CRDs (see package.json).
// stdin: a JSON array of objects; stdout: a JSON array of {kind, name, errors}; exit 0.
// A kind the package does not know is reported as an error, never skipped.
import { readFileSync } from "node:fs";

const objects = JSON.parse(readFileSync(0, "utf8"));
const results = [];
for (const obj of objects) {
  const [group, version] = String(obj.apiVersion).split("/");
  const name = obj.metadata?.name ?? "";
  let errors = [];
  try {
    const module = await import(
      `@kubernetes-models/prometheus-operator/${group}/${version}/${obj.kind}`
    );
    const Model = module[obj.kind];
    new Model(obj).validate();
  } catch (err) {
    errors = [String(err?.message ?? err)];
    if (Array.isArray(err?.errors)) {
      errors = err.errors.map((e) => `${e.instancePath || "/"} ${e.message}`);
    }
  }
  results.push({ kind: obj.kind, name, errors });
}
process.stdout.write(JSON.stringify(results));
