// Validates an AsyncAPI document with the AsyncAPI project's own parser (and its Avro schema
// parser, for the payloads). Prints every diagnostic; exits 1 if one is an error.
const fs = require("fs");
const { Parser } = require("@asyncapi/parser");
const { AvroSchemaParser } = require("@asyncapi/avro-schema-parser");

async function main() {
  const parser = new Parser();
  parser.registerSchemaParser(AvroSchemaParser());
  const text = fs.readFileSync(process.argv[2], "utf8");
  const { document, diagnostics } = await parser.parse(text);
  let errors = 0;
  for (const d of diagnostics) {
    const level = ["error", "warning", "info", "hint"][d.severity];
    if (d.severity === 0) errors += 1;
    console.log(`${level} ${d.code} ${JSON.stringify(d.path)} ${d.message}`);
  }
  if (document) {
    console.log(`parsed: ${document.channels().length} channels, ` +
                `${document.operations().length} operations, ` +
                `${document.components().messages().length} messages`);
  }
  process.exit(errors || !document ? 1 : 0);
}
main().catch((e) => { console.error(e); process.exit(2); });
