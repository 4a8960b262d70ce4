// Load a TensorFlow.js layers model from a folder with tfjs-layers itself,
// predict on the inputs given, and print the outputs as JSON.
//
// Usage: node predict.js MODEL_DIR INPUTS_JSON
// INPUTS_JSON: [{"shape": [...], "data": [...]}, ...], one entry per input.
// Prints [{"shape": [...], "data": [...]}, ...], one entry per output.
//
// Pure JavaScript (tfjs-core + tfjs-backend-cpu): tfjs-node would download
// a native library at install time, which this project cannot rely on.
"use strict";

const fs = require("fs");
const path = require("path");
const tf = require("@tensorflow/tfjs-core");
require("@tensorflow/tfjs-backend-cpu");
const tfl = require("@tensorflow/tfjs-layers");

function folderHandler(dir) {
  // An IOHandler that reads model.json and its shards the way tf.js's
  // browser HTTP handler would, from local files.
  return {
    load: async () => {
      const doc = JSON.parse(fs.readFileSync(path.join(dir, "model.json"), "utf8"));
      const specs = [];
      const buffers = [];
      for (const group of doc.weightsManifest) {
        specs.push(...group.weights);
        for (const shard of group.paths) {
          buffers.push(fs.readFileSync(path.join(dir, shard)));
        }
      }
      const joined = Buffer.concat(buffers);
      return {
        modelTopology: doc.modelTopology,
        weightSpecs: specs,
        weightData: joined.buffer.slice(
          joined.byteOffset,
          joined.byteOffset + joined.byteLength
        ),
        format: doc.format,
        generatedBy: doc.generatedBy,
        convertedBy: doc.convertedBy,
      };
    },
  };
}

async function main() {
  const [dir, inputsPath] = process.argv.slice(2);
  await tf.setBackend("cpu");
  const model = await tfl.loadLayersModel(folderHandler(dir));
  const inputs = JSON.parse(fs.readFileSync(inputsPath, "utf8")).map((x) =>
    tf.tensor(x.data, x.shape, "float32")
  );
  let outputs = model.predict(inputs.length === 1 ? inputs[0] : inputs);
  if (!Array.isArray(outputs)) outputs = [outputs];
  const result = outputs.map((y) => ({ shape: y.shape, data: Array.from(y.dataSync()) }));
  process.stdout.write(JSON.stringify(result));
}

main().catch((err) => {
  process.stderr.write(String(err && err.stack ? err.stack : err) + "\n");
  process.exit(1);
});
