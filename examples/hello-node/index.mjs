// A Lambda-style Node.js handler (runtime nodejs20.x, handler index.handler).
export const handler = async (event, context) => {
  console.log(`hello from ${context.functionName} (${context.awsRequestId})`);
  return {
    message: `Hello, ${event.name ?? "world"}!`,
    function: context.functionName,
    remaining_ms: context.getRemainingTimeInMillis(),
    node: process.version,
  };
};
