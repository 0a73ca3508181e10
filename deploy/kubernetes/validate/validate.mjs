// Validates the Kubernetes manifests in deploy/kubernetes/ against the
// Kubernetes API schemas of the npm package kubernetes-models.
//
// Every YAML document of every manifest is parsed (duplicate keys are
// errors) and checked twice:
//
// 1. with its kubernetes-models class's validate(), which checks required
//    fields, types and formats, but accepts unknown fields;
// 2. with the TypeScript compiler against the class's interface, whose
//    excess-property check rejects unknown fields, such as a misspelled
//    `readinesProbe`, which the API server would drop without a word.
//
// kustomization.yaml is checked for the files it names, and the ConfigMap
// that its configMapGenerator makes is validated like the other objects.
//
// Before the manifests, a self-test feeds deliberately broken objects to
// both checks, and fails when a check accepts one, so that a check that
// stopped working cannot pass the manifests silently.
//
// Usage: node validate.mjs [DIR], with DIR deploy/kubernetes by default.
// Exits 0 when every check passes, else 1.

import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync, existsSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

import { parseAllDocuments } from "yaml";
import { ConfigMap } from "kubernetes-models/v1/ConfigMap";
import { Service } from "kubernetes-models/v1/Service";
import { Deployment } from "kubernetes-models/apps/v1/Deployment";
import { PodDisruptionBudget } from "kubernetes-models/policy/v1/PodDisruptionBudget";
import { HorizontalPodAutoscaler } from "kubernetes-models/autoscaling/v2/HorizontalPodAutoscaler";

const here = dirname(fileURLToPath(import.meta.url));

// The kinds the manifests may contain: the class that validates each, and
// the module and interface that the TypeScript check types it with.
const KINDS = new Map([
  ["v1/ConfigMap", { model: ConfigMap, module: "kubernetes-models/v1/ConfigMap", type: "IConfigMap" }],
  ["v1/Service", { model: Service, module: "kubernetes-models/v1/Service", type: "IService" }],
  ["apps/v1/Deployment", { model: Deployment, module: "kubernetes-models/apps/v1/Deployment", type: "IDeployment" }],
  [
    "policy/v1/PodDisruptionBudget",
    { model: PodDisruptionBudget, module: "kubernetes-models/policy/v1/PodDisruptionBudget", type: "IPodDisruptionBudget" },
  ],
  [
    "autoscaling/v2/HorizontalPodAutoscaler",
    {
      model: HorizontalPodAutoscaler,
      module: "kubernetes-models/autoscaling/v2/HorizontalPodAutoscaler",
      type: "IHorizontalPodAutoscaler",
    },
  ],
]);

/** Returns an object to check, with the place it came from. */
function entry(source, object) {
  return { source, object };
}

/** Parses every document of a YAML file; throws on a syntax error. */
function readDocuments(path) {
  const documents = parseAllDocuments(readFileSync(path, "utf8"), { uniqueKeys: true });
  const objects = [];
  documents.forEach((document, index) => {
    if (document.errors.length > 0) {
      throw new Error(`${path}: document ${index}: ${document.errors.map((error) => error.message).join("; ")}`);
    }
    const object = document.toJS();
    if (object !== null) {
      objects.push(entry(`${path} (document ${index})`, object));
    }
  });
  return objects;
}

/** Returns the kind's entry in KINDS, or throws for a kind not listed. */
function kindOf({ source, object }) {
  const key = `${object.apiVersion}/${object.kind}`;
  const kind = KINDS.get(key);
  if (kind === undefined) {
    throw new Error(`${source}: ${key} is not a kind this check knows (known: ${[...KINDS.keys()].join(", ")})`);
  }
  return kind;
}

/** Runs each object's kubernetes-models validate(); returns the errors. */
function validateModels(objects) {
  const errors = [];
  for (const item of objects) {
    try {
      const { model } = kindOf(item);
      new model(item.object).validate();
    } catch (error) {
      errors.push(`${item.source}: ${error.message}`);
    }
  }
  return errors;
}

/**
 * Type-checks each object against its kind's interface with tsc, whose
 * excess-property check rejects unknown fields. Returns the errors, each
 * naming the object it is in.
 */
function checkUnknownFields(objects) {
  const known = objects.filter((item) => {
    try {
      kindOf(item);
      return true;
    } catch {
      return false; // validateModels reports it.
    }
  });
  if (known.length === 0) {
    return [];
  }

  // Inside this directory, so that the compiler finds node_modules.
  const scratch = mkdtempSync(join(here, ".scratch-"));
  try {
    const lines = [];
    const imported = new Set();
    for (const item of known) {
      const { module, type } = kindOf(item);
      if (!imported.has(type)) {
        lines.push(`import type { ${type} } from ${JSON.stringify(module)};`);
        imported.add(type);
      }
    }
    // One declaration per object. The first line of each maps a compiler
    // error back to the object it is in.
    const firstLine = new Map();
    let lineCount = lines.length;
    known.forEach((item, index) => {
      const { type } = kindOf(item);
      const declaration = `export const object${index}: ${type} = ${JSON.stringify(item.object, null, 2)};`;
      firstLine.set(index, lineCount + 1);
      lines.push(declaration);
      lineCount += declaration.split("\n").length;
    });
    const file = join(scratch, "manifests.ts");
    writeFileSync(file, lines.join("\n") + "\n");

    const tsc = join(here, "node_modules", "typescript", "bin", "tsc");
    try {
      execFileSync(
        process.execPath,
        [tsc, "--noEmit", "--strict", "--skipLibCheck", "--module", "esnext", "--moduleResolution", "bundler", file],
        { cwd: here, encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] },
      );
      return [];
    } catch (error) {
      const output = `${error.stdout ?? ""}${error.stderr ?? ""}`.trim();
      const located = output.split("\n").filter((line) => /manifests\.ts\(\d+,\d+\): error TS/.test(line));
      // An error outside the objects (a bad option, a missing module)
      // means the check itself failed, which no object may hide.
      if (located.length === 0) {
        throw new Error(`the TypeScript compiler failed without an error in the manifests:\n${output}`);
      }
      return located.map((line) => {
        const lineNumber = Number(/manifests\.ts\((\d+),/.exec(line)[1]);
        let index = 0;
        for (const [candidate, start] of firstLine) {
          if (start <= lineNumber) {
            index = candidate;
          }
        }
        return `${known[index].source}: ${line.replace(/^.*?error /, "error ")}`;
      });
    }
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
}

/**
 * Runs both checks on `objects`, with one compiler run for all of them
 * because each run takes seconds. Returns the errors of each object, in
 * the order of `objects`.
 */
function checkAll(objects) {
  const modelErrors = validateModels(objects);
  const fieldErrors = checkUnknownFields(objects);
  return objects.map((item) =>
    [...modelErrors, ...fieldErrors].filter((error) => error.startsWith(`${item.source}:`)),
  );
}

/**
 * Reads kustomization.yaml: checks that the files it names exist, and
 * returns the ConfigMaps its configMapGenerator makes from them.
 */
function readKustomization(dir) {
  const path = join(dir, "kustomization.yaml");
  const [document] = readDocuments(path);
  const kustomization = document.object;
  const errors = [];
  const generated = [];
  for (const resource of kustomization.resources ?? []) {
    if (!existsSync(join(dir, resource))) {
      errors.push(`${path}: resource ${resource} does not exist`);
    }
  }
  for (const generator of kustomization.configMapGenerator ?? []) {
    const data = {};
    for (const file of generator.files ?? []) {
      const [key, name] = file.includes("=") ? file.split("=", 2) : [file.split("/").pop(), file];
      const filePath = join(dir, name);
      if (!existsSync(filePath)) {
        errors.push(`${path}: configMapGenerator ${generator.name} names ${name}, which does not exist`);
        continue;
      }
      data[key] = readFileSync(filePath, "utf8");
    }
    generated.push(
      entry(`${path} (configMapGenerator ${generator.name})`, {
        apiVersion: "v1",
        kind: "ConfigMap",
        metadata: { name: generator.name },
        data,
      }),
    );
  }
  return { resources: kustomization.resources ?? [], generated, errors };
}

/**
 * Returns a valid Deployment and broken variants of it, each with whether
 * the checks must accept it.
 */
function selfTestCases() {
  const deployment = {
    apiVersion: "apps/v1",
    kind: "Deployment",
    metadata: { name: "broken" },
    spec: {
      selector: { matchLabels: { app: "broken" } },
      template: {
        metadata: { labels: { app: "broken" } },
        spec: { containers: [{ name: "broken", image: "broken" }] },
      },
    },
  };
  const cases = [
    ["a valid Deployment", deployment, true],
    ["a misspelled container field", structuredClone(deployment), false, (object) => {
      object.spec.template.spec.containers[0].readinesProbe = { httpGet: { path: "/readyz", port: 9090 } };
    }],
    ["an unknown top-level field", structuredClone(deployment), false, (object) => {
      object.specification = {};
    }],
    ["replicas as a string", structuredClone(deployment), false, (object) => {
      object.spec.replicas = "2";
    }],
    ["a missing selector", structuredClone(deployment), false, (object) => {
      delete object.spec.selector;
    }],
  ];
  return cases.map(([name, object, valid, breakIt]) => {
    if (breakIt) {
      breakIt(object);
    }
    return { item: entry(`self-test: ${name}`, object), valid };
  });
}

function main() {
  const dir = resolve(process.argv[2] ?? join(here, ".."));

  const { resources, generated, errors: kustomizeErrors } = readKustomization(dir);
  const manifests = readdirSync(dir).filter((name) => name.endsWith(".yaml") && name !== "kustomization.yaml");
  for (const name of manifests.filter((name) => !resources.includes(name))) {
    kustomizeErrors.push(`${join(dir, name)}: not listed in kustomization.yaml resources`);
  }
  let objects = [...generated];
  for (const name of manifests) {
    objects = objects.concat(readDocuments(join(dir, name)));
  }

  const selfTest = selfTestCases();
  const results = checkAll([...selfTest.map((test) => test.item), ...objects]);
  const selfTestResults = results.slice(0, selfTest.length);
  const objectResults = results.slice(selfTest.length);

  const selfTestFailures = [];
  selfTest.forEach(({ item, valid }, index) => {
    const errors = selfTestResults[index];
    if (valid && errors.length > 0) {
      selfTestFailures.push(`${item.source} was rejected: ${errors.join("; ")}`);
    }
    if (!valid && errors.length === 0) {
      selfTestFailures.push(`${item.source} was accepted, so a check is broken`);
    }
  });
  if (selfTestFailures.length > 0) {
    console.error(selfTestFailures.join("\n"));
    console.error(`0 passed, ${objects.length} failed (the self-test failed)`);
    process.exit(1);
  }
  console.log(`self-test: ${selfTest.length - 1} broken objects rejected, the valid one accepted`);

  let failed = 0;
  objects.forEach((item, index) => {
    const errors = objectResults[index];
    const { apiVersion, kind, metadata } = item.object;
    if (errors.length === 0) {
      console.log(`ok    ${apiVersion} ${kind} ${metadata?.name} from ${item.source}`);
    } else {
      failed += 1;
      console.log(`FAIL  ${apiVersion} ${kind} ${metadata?.name} from ${item.source}`);
      for (const error of errors) {
        console.log(`      ${error}`);
      }
    }
  });
  for (const error of kustomizeErrors) {
    failed += 1;
    console.log(`FAIL  ${error}`);
  }
  console.log(`${objects.length + kustomizeErrors.length - failed} passed, ${failed} failed`);
  process.exit(failed > 0 ? 1 : 0);
}

try {
  main();
} catch (error) {
  console.error(`validate.mjs: ${error.message}`);
  console.log("0 passed, 1 failed");
  process.exit(1);
}
