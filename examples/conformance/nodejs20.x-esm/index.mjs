// lamina's runtime conformance function for Node.js as an ES module with an async handler
// (examples/conformance/README.md).
import fs from "node:fs/promises";
import { createRequire } from "node:module";

// ES modules do not read NODE_PATH: layer packages are required through createRequire, whose
// lookup honours it (as on Lambda).
const require = createRequire(import.meta.url);

export const handler = async (event, context) => {
  switch (event.op) {
    case "echo":
      return event.data;
    case "context":
      return {
        request_id: context.awsRequestId,
        function_name: context.functionName,
        function_version: context.functionVersion,
        invoked_function_arn: context.invokedFunctionArn,
        memory_limit_in_mb: Number(context.memoryLimitInMB),
        remaining_time_ms: context.getRemainingTimeInMillis(),
        log_group_name: context.logGroupName,
        log_stream_name: context.logStreamName,
      };
    case "env":
      return Object.fromEntries(event.names.map((n) => [n, process.env[n] ?? null]));
    case "error":
      throw new Error(event.message);
    case "sleep":
      await new Promise((r) => setTimeout(r, event.ms));
      return "slept";
    case "print":
      process.stdout.write(event.text + "\n");
      process.stderr.write(event.text + "\n");
      return "printed";
    case "tmp_write":
      await fs.writeFile("/tmp/conformance.txt", event.data);
      return "written";
    case "tmp_read":
      try {
        return await fs.readFile("/tmp/conformance.txt", "utf8");
      } catch {
        return null;
      }
    case "layer":
      return require("lamina-layer").hello();
    default:
      throw new TypeError(`unknown op ${event.op}`);
  }
};
