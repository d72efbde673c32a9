// lamina's Node.js runtime (nodejs20.x): the loop between the Runtime API (2018-06-01) and the
// function's handler, following Lambda's Node.js conventions:
// - _HANDLER is `path/to/file.export` (nested exports with dots: `file.a.b`); the file is
//   file.js, file.mjs or file.cjs under LAMBDA_TASK_ROOT; .mjs, or .js under a package.json with
//   "type": "module", is loaded as an ES module, the rest with require().
// - Handlers are async (return a promise) or take a callback (event, context, callback);
//   context.succeed/fail/done work as on Lambda.
// - A handler error is reported as {errorType: err.name, errorMessage, trace: stack lines};
//   Init failures as Runtime.ImportModuleError, Runtime.HandlerNotFound,
//   Runtime.UserCodeSyntaxError or Runtime.MalformedHandlerName, and the runtime exits.
// - console.* lines go out as `<ISO time>\t<request id>\t<LEVEL>\t<message>`.
import http from "node:http";
import fs from "node:fs";
import path from "node:path";
import util from "node:util";
import { createRequire } from "node:module";
import { pathToFileURL } from "node:url";

const API = process.env.AWS_LAMBDA_RUNTIME_API || "127.0.0.1:9001";
const [HOST, PORT] = API.split(":");
const BASE = "/2018-06-01/runtime";
const TASK_ROOT = process.env.LAMBDA_TASK_ROOT || "/var/task";
const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });

let currentRequestId = undefined;

function request(method, p, body, headers = {}) {
  return new Promise((resolve, reject) => {
    const data = body === undefined ? undefined : Buffer.from(body);
    const req = http.request(
      { host: HOST, port: Number(PORT), path: BASE + p, method, agent,
        headers: data ? { ...headers, "Content-Length": data.length } : headers },
      (res) => {
        const chunks = [];
        res.on("data", (c) => chunks.push(c));
        res.on("end", () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks) }));
        res.on("error", reject);
      });
    req.on("error", reject);
    if (data) req.write(data);
    req.end();
  });
}

// ---- logging -------------------------------------------------------------------------------
function patchConsole() {
  const write = (stream, level) => (...args) => {
    const msg = util.format(...args).replace(/\n/g, "\r");
    stream.write(`${new Date().toISOString()}\t${currentRequestId ?? "undefined"}\t${level}\t${msg}\n`);
  };
  console.log = write(process.stdout, "INFO");
  console.info = write(process.stdout, "INFO");
  console.debug = write(process.stdout, "DEBUG");
  console.trace = write(process.stdout, "TRACE");
  console.warn = write(process.stderr, "WARN");
  console.error = write(process.stderr, "ERROR");
}

// ---- errors --------------------------------------------------------------------------------
function toLambdaError(err) {
  if (err instanceof Error) {
    return {
      errorType: err.name || err.constructor?.name || "Error",
      errorMessage: err.message,
      trace: typeof err.stack === "string" ? err.stack.split("\n") : [],
    };
  }
  if (err === null || err === undefined) {
    return { errorType: "Error", errorMessage: String(err), trace: [] };
  }
  return {
    errorType: typeof err,
    errorMessage: typeof err === "string" ? err : JSON.stringify(err),
    trace: [],
  };
}

class InitError extends Error {
  constructor(type, message, cause) {
    super(message);
    this.lambdaType = type;
    if (cause?.stack) this.stack = cause.stack;
  }
}

async function postInitError(err) {
  const body = err instanceof InitError
    ? { errorType: err.lambdaType, errorMessage: err.message, trace: err.stack ? err.stack.split("\n") : [] }
    : toLambdaError(err);
  console.error(`${body.errorType}: ${body.errorMessage}`);
  try {
    await request("POST", "/init/error", JSON.stringify(body), {
      "Content-Type": "application/json",
      "Lambda-Runtime-Function-Error-Type": body.errorType.startsWith("Runtime.") ? body.errorType : "Runtime.Unknown",
    });
  } catch (_) { /* the runtime exits either way */ }
  process.exit(1);
}

// ---- loading the handler -------------------------------------------------------------------
function isModuleDir(dir) {
  // The nearest package.json up to the task root decides whether .js is ESM.
  let d = dir;
  for (;;) {
    const pj = path.join(d, "package.json");
    if (fs.existsSync(pj)) {
      try { return JSON.parse(fs.readFileSync(pj, "utf8")).type === "module"; } catch { return false; }
    }
    if (d === TASK_ROOT || d === path.dirname(d)) return false;
    d = path.dirname(d);
  }
}

async function loadHandler(handlerString) {
  const base = path.basename(handlerString);
  const dot = base.indexOf(".");
  if (!handlerString || dot <= 0 || dot === base.length - 1) {
    throw new InitError("Runtime.MalformedHandlerName", "Bad handler");
  }
  const modulePath = path.join(path.dirname(handlerString), base.slice(0, dot));
  const exportPath = base.slice(dot + 1);
  const full = path.resolve(TASK_ROOT, modulePath);
  let mod;
  try {
    const found = [".js", ".mjs", ".cjs"].map((e) => full + e).find((f) => fs.existsSync(f));
    if (found && (found.endsWith(".mjs") || (found.endsWith(".js") && isModuleDir(path.dirname(found))))) {
      mod = await import(pathToFileURL(found).href);
    } else {
      // require() also finds a directory module or a package name, as Lambda's runtime does.
      const require = createRequire(path.join(TASK_ROOT, "index.js"));
      mod = require(found ?? full);
    }
  } catch (e) {
    if (e instanceof SyntaxError) {
      throw new InitError("Runtime.UserCodeSyntaxError", `${e.name}: ${e.message}`, e);
    }
    if (e?.code === "MODULE_NOT_FOUND" || e?.code === "ERR_MODULE_NOT_FOUND") {
      throw new InitError("Runtime.ImportModuleError", `Error: Cannot find module '${modulePath}'\nRequire stack:\n- /var/runtime/index.mjs`, e);
    }
    throw e;
  }
  let h = mod;
  for (const part of exportPath.split(".")) {
    h = h?.[part];
  }
  if (h === undefined && mod?.default && typeof mod.default === "object") {
    h = mod.default;
    for (const part of exportPath.split(".")) h = h?.[part];
  }
  if (typeof h !== "function") {
    throw new InitError("Runtime.HandlerNotFound", `${path.basename(modulePath)}.${exportPath} is undefined or not exported`);
  }
  return h;
}

// ---- invoking ------------------------------------------------------------------------------
function makeContext(headers, settle) {
  const deadline = Number(headers["lambda-runtime-deadline-ms"]);
  const parse = (h) => { try { return h ? JSON.parse(h) : undefined; } catch { return undefined; } };
  return {
    callbackWaitsForEmptyEventLoop: true,
    functionName: process.env.AWS_LAMBDA_FUNCTION_NAME,
    functionVersion: process.env.AWS_LAMBDA_FUNCTION_VERSION,
    invokedFunctionArn: headers["lambda-runtime-invoked-function-arn"],
    memoryLimitInMB: process.env.AWS_LAMBDA_FUNCTION_MEMORY_SIZE,
    awsRequestId: headers["lambda-runtime-aws-request-id"],
    logGroupName: process.env.AWS_LAMBDA_LOG_GROUP_NAME,
    logStreamName: process.env.AWS_LAMBDA_LOG_STREAM_NAME,
    clientContext: parse(headers["lambda-runtime-client-context"]),
    identity: parse(headers["lambda-runtime-cognito-identity"]),
    getRemainingTimeInMillis: () => Math.max(0, deadline - Date.now()),
    succeed: (v) => settle(null, v),
    fail: (e) => settle(e ?? "handled"),
    done: (e, v) => settle(e, v),
  };
}

async function invokeOnce(handler) {
  const next = await request("GET", "/invocation/next");
  if (next.status !== 200) {
    throw new Error(`runtime API /next answered ${next.status}: ${next.body}`);
  }
  const h = next.headers;
  const id = h["lambda-runtime-aws-request-id"];
  currentRequestId = id;
  if (h["lambda-runtime-trace-id"]) process.env._X_AMZN_TRACE_ID = h["lambda-runtime-trace-id"];
  else delete process.env._X_AMZN_TRACE_ID;

  let outcome;
  try {
    const event = JSON.parse(next.body.toString("utf8") || "null");
    outcome = await new Promise((resolve) => {
      let done = false;
      const settle = (err, value) => {
        if (done) return;
        done = true;
        resolve(err !== null && err !== undefined ? { err } : { value });
      };
      const context = makeContext(h, settle);
      let r;
      try {
        r = handler(event, context, settle);
      } catch (e) {
        settle(e);
        return;
      }
      if (r && typeof r.then === "function") {
        r.then((v) => settle(null, v), (e) => settle(e ?? new Error("rejected")));
      } else if (handler.length < 3) {
        settle(null, r);
      }
    });
  } catch (e) {
    outcome = { err: e };
  }
  if ("err" in outcome) {
    const body = toLambdaError(outcome.err);
    console.error(`Invoke Error \t${JSON.stringify(body)}`);
    await request("POST", `/invocation/${id}/error`, JSON.stringify(body), {
      "Content-Type": "application/json",
      "Lambda-Runtime-Function-Error-Type": "Function.Unknown",
    });
  } else {
    let payload;
    try {
      payload = JSON.stringify(outcome.value === undefined ? null : outcome.value);
    } catch (e) {
      const body = { errorType: "Runtime.MarshalError", errorMessage: `Unable to stringify response body: ${e.message}`, trace: [] };
      await request("POST", `/invocation/${id}/error`, JSON.stringify(body), { "Content-Type": "application/json" });
      return;
    }
    await request("POST", `/invocation/${id}/response`, payload, { "Content-Type": "application/json" });
  }
  currentRequestId = undefined;
}

async function main() {
  patchConsole();
  let handler;
  try {
    handler = await loadHandler(process.env._HANDLER || "");
  } catch (e) {
    await postInitError(e);
    return;
  }
  process.on("unhandledRejection", (reason) => {
    console.error(`Unhandled Promise Rejection \t${JSON.stringify(toLambdaError(reason))}`);
  });
  for (;;) {
    await invokeOnce(handler);
  }
}

main().catch((e) => {
  process.stderr.write(`lamina nodejs runtime: ${e?.stack ?? e}\n`);
  process.exit(1);
});
