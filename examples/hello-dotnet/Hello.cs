// The demo's C# function (runtime dotnet, on Mono; handler Hello::Hello.Function::Handler).
using System.Collections.Generic;
using Amazon.Lambda.Core;

namespace Hello
{
    public class Function
    {
        public string Handler(Dictionary<string, object> input, ILambdaContext context)
        {
            context.Logger.LogLine("hello from " + context.FunctionName);
            object name;
            input.TryGetValue("name", out name);
            return "Hello, " + (name ?? "world") + "! (C# on Mono " + System.Environment.Version + ")";
        }
    }
}
