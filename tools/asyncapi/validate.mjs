// Parse an AsyncAPI document with the official parser; exit 1 on any error diagnostic.
// Usage: node validate.mjs <asyncapi.yaml>
import { readFile } from "node:fs/promises";
import { resolve } from "node:path";
import { Parser, DiagnosticSeverity } from "@asyncapi/parser";

const path = process.argv[2];
if (!path) {
  console.error("usage: node validate.mjs <asyncapi.yaml>");
  process.exit(2);
}
const source = await readFile(path, "utf8");
const parser = new Parser();
const { document, diagnostics } = await parser.parse(source, { source: resolve(path) });
const errors = diagnostics.filter((d) => d.severity === DiagnosticSeverity.Error);
for (const d of diagnostics) {
  const level = d.severity === DiagnosticSeverity.Error ? "error" : "warning";
  if (level === "error" || process.env.ASYNCAPI_SHOW_WARNINGS) {
    console.error(`${level}: ${d.code}: ${d.message} at ${d.path.join(".") || "<root>"}`);
  }
}
if (errors.length || !document) {
  console.error(`${path}: ${errors.length} error(s)`);
  process.exit(1);
}
const channels = document.channels().length;
const operations = document.operations().length;
const messages = document.components().messages().length;
console.log(`${path}: valid AsyncAPI ${document.version()}: ${channels} channels, ${operations} operations, ${messages} messages`);
