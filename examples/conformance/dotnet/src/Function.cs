// lamina's conformance function for the dotnet runtime (C# on Mono).
using System;
using System.Collections;
using System.Collections.Generic;
using System.IO;
using System.Runtime.CompilerServices;
using System.Threading;
using Amazon.Lambda.Core;

namespace Conformance
{
    public class Function
    {
        const string TmpFile = "/tmp/conformance.txt";

        public object Handler(Dictionary<string, object> input, ILambdaContext context)
        {
            object op;
            input.TryGetValue("op", out op);
            switch (op as string)
            {
                case "echo":
                    object data;
                    input.TryGetValue("data", out data);
                    return data;
                case "context":
                    return new Dictionary<string, object>
                    {
                        { "request_id", context.AwsRequestId },
                        { "function_name", context.FunctionName },
                        { "function_version", context.FunctionVersion },
                        { "invoked_function_arn", context.InvokedFunctionArn },
                        { "memory_limit_in_mb", context.MemoryLimitInMB },
                        { "remaining_time_ms", (long)context.RemainingTime.TotalMilliseconds },
                        { "log_group_name", context.LogGroupName },
                        { "log_stream_name", context.LogStreamName },
                    };
                case "env":
                    var env = new Dictionary<string, object>();
                    foreach (object name in (IEnumerable)input["names"])
                        env[(string)name] = Environment.GetEnvironmentVariable((string)name);
                    return env;
                case "error":
                    throw new Exception((string)input["message"]);
                case "sleep":
                    Thread.Sleep(Convert.ToInt32(input["ms"]));
                    return "slept";
                case "print":
                    Console.Out.WriteLine((string)input["text"]);
                    Console.Out.Flush();
                    Console.Error.WriteLine((string)input["text"]);
                    Console.Error.Flush();
                    return "printed";
                case "tmp_write":
                    File.WriteAllText(TmpFile, (string)input["data"]);
                    return "written";
                case "tmp_read":
                    return File.Exists(TmpFile) ? File.ReadAllText(TmpFile) : null;
                case "layer":
                    return FromLayer();
                default:
                    throw new ArgumentException("unknown op: " + op);
            }
        }

        // Separate and not inlined: Mono resolves ConformanceLayer.dll (from /opt/dotnet/lib) only when
        // this method is compiled, so the other ops work without the layer.
        [MethodImpl(MethodImplOptions.NoInlining)]
        static object FromLayer()
        {
            return ConformanceLayer.Layer.Hello();
        }
    }
}
