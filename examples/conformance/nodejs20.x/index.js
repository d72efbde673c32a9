// lamina's runtime conformance function for Node.js, CommonJS with a callback-style handler for
// some ops and promises for the others (examples/conformance/README.md).
const fs = require("fs");

exports.handler = function (event, context, callback) {
  const op = event.op;
  switch (op) {
    case "echo":
      return callback(null, event.data);
    case "context":
      return callback(null, {
        request_id: context.awsRequestId,
        function_name: context.functionName,
        function_version: context.functionVersion,
        invoked_function_arn: context.invokedFunctionArn,
        memory_limit_in_mb: Number(context.memoryLimitInMB),
        remaining_time_ms: context.getRemainingTimeInMillis(),
        log_group_name: context.logGroupName,
        log_stream_name: context.logStreamName,
      });
    case "env": {
      const out = {};
      for (const n of event.names) out[n] = process.env[n] ?? null;
      return callback(null, out);
    }
    case "error":
      throw new Error(event.message);
    case "sleep":
      return setTimeout(() => callback(null, "slept"), event.ms);
    case "print":
      process.stdout.write(event.text + "\n");
      process.stderr.write(event.text + "\n");
      return callback(null, "printed");
    case "tmp_write":
      fs.writeFileSync("/tmp/conformance.txt", event.data);
      return callback(null, "written");
    case "tmp_read":
      return callback(null, fs.existsSync("/tmp/conformance.txt") ? fs.readFileSync("/tmp/conformance.txt", "utf8") : null);
    case "layer":
      return callback(null, require("lamina-layer").hello());
    default:
      return callback(new Error(`unknown op ${op}`));
  }
};
